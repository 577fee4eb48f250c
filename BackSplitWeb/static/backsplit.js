// BackSplit web: send a chosen file to the app's upload route as one streamed request body. The browser
// reads the file from disk as it sends it; the app writes it to disk as it arrives and stops at its size
// limit, so neither side holds a CT in memory (trame's own state channel moves files as 4 MiB messages).
window.backsplitUpload = async function backsplitUpload(file, kind, ticket) {
  if (!file) {
    return;
  }
  const query = new URLSearchParams({ kind, name: file.name });
  try {
    await fetch(`/backsplit/upload?${query}`, {
      method: "POST",
      body: file,
      headers: { "X-BackSplit-Ticket": ticket, "Content-Type": "application/octet-stream" },
    });
  } catch (error) {
    console.error("BackSplit upload failed", error);
  }
  // The app reports the outcome (opened / refused and why) through the page's state.
};
