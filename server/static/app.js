// mmsearch web page: what needs a script. The server renders text searches (the URL is the state);
// this adds an image or audio file as the query (picked or dropped), its pages, the re-rank box enabled
// only where re-ranking applies, and starts each audio player at its matched window where the browser
// ignored the #t= media fragment.
"use strict";

const $ = (selector) => document.querySelector(selector);

function seconds(value) {
  const minutes = Math.floor(value / 60);
  return `${minutes}:${(value - minutes * 60).toFixed(1).padStart(4, "0")}`;
}

function element(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

// The same markup as server/page.py's hit_html.
function hitNode(hit, rank, kind) {
  const name = hit.path.split("/").pop();
  const fileUrl = `/api/items/${hit.id}/file`;
  const body = [];
  if (hit.modality === "image") {
    body.push(element("a", { class: "media", href: fileUrl },
      [element("img", { src: `/api/items/${hit.id}/thumbnail`, alt: name, loading: "lazy" })]));
  } else if (hit.modality === "audio" || hit.modality === "video") {
    const start = hit.start || 0, end = hit.end || 0;
    let window = `${seconds(start)} - ${seconds(end)}`;
    if (hit.modality === "video") window = hit.track === "image" ? `frame at ${seconds(start)}` : `sound ${window}`;
    body.push(element(hit.modality, { controls: "", preload: "metadata", src: `${fileUrl}#t=${start}`,
                                      "data-start": String(start), "data-end": String(end) }));
    body.push(element("span", { class: "window" }, [window]));
  } else {
    body.push(element("blockquote", { class: "passage" }, [hit.passage || ""]));
    if (hit.page !== undefined && hit.page !== null) body.push(element("span", { class: "window" }, [`page ${hit.page}`]));
  }
  const like = `/?${new URLSearchParams({ like: hit.id, kind })}`;
  const score = element("span", { class: "score", title: `cosine ${hit.score.toFixed(4)}, calibrated ${hit.calibrated.toFixed(2)}` },
    [`${hit.score.toFixed(3)} `, element("small", {}, [`z ${hit.calibrated.toFixed(2)}`])]);
  const scores = [score];
  if (hit.rerank_score !== undefined && hit.rerank_score !== null) {  // re-ranked: match, then the cosine
    scores.push(element("span", { class: "match", title: `re-ranked: match ${hit.match.toFixed(4)} + cosine `
                                                         + `${hit.score.toFixed(4)} = ${hit.rerank_score.toFixed(4)}` },
      [`match ${hit.match.toFixed(2)} \u00b7 cos ${hit.score.toFixed(2)} `,
       element("small", {}, [`sum ${hit.rerank_score.toFixed(2)}`])]));
  }
  const meta = element("div", { class: "meta" }, [
    element("a", { class: "name", href: fileUrl, title: hit.path }, [name]), ...scores,
    element("a", { class: "like", href: like }, ["More like this"])]);
  return element("li", { class: `hit hit-${hit.modality}`, "data-id": String(hit.id), "data-rank": String(rank) },
    [...body, meta]);
}

function startPlayers(root = document) {
  for (const player of root.querySelectorAll("audio[data-start], video[data-start]")) {
    const start = parseFloat(player.dataset.start) || 0;
    const seek = () => { if (Math.abs(player.currentTime - start) > 0.05) player.currentTime = start; };
    if (player.readyState >= 1) seek(); else player.addEventListener("loadedmetadata", seek, { once: true });
  }
}

let uploaded = null;  // the file of the current file query, sent again for its next pages

// Whether the search the form would run can be re-ranked (as the server's engine allows): a text query's
// images, or one image file's passages (no text with it; before a file is chosen, an empty box with kind
// text may still become one).
function rerankApplies(file) {
  const form = $("#search");
  const text = form.q.value.trim(), kind = form.kind.value;
  if (file) return file.type.startsWith("image/") && !text && kind === "text";
  return kind === "image" || (kind === "text" && !text);
}

async function fileSearch(file, cursor = null) {
  uploaded = file;
  const form = $("#search");
  const data = new FormData();
  const text = form.q.value.trim();
  if (text) data.append("q", text);
  data.append("kind", form.kind.value);
  data.append("k", "24");
  if (cursor) data.append("cursor", cursor);
  const rerank = form.rerank.checked && rerankApplies(file);
  if (rerank) {
    data.append("rerank", form.rerank.value);
    data.append("rerank_optional", "1");  // a model that cannot be loaded: the hits anyway, with a note
  }
  data.append(file.type.startsWith("audio/") ? "audio" : "image", file, file.name);
  const summary = $("#summary");
  summary.className = "";
  summary.textContent = `Searching with ${file.name}...`;
  let body;
  try {
    const response = await fetch("/api/search", { method: "POST", body: data, credentials: "same-origin" });
    body = await response.json();
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  } catch (error) {
    summary.className = "error";
    summary.textContent = error.message;
    return;
  }
  const offset = cursor ? JSON.parse(atob(cursor.replace(/-/g, "+").replace(/_/g, "/"))).offset : 0;
  const results = $("#results");
  results.replaceChildren(...body.hits.map((hit, n) => hitNode(hit, offset + n + 1, form.kind.value)));
  summary.textContent = body.hits.length
    ? `Results for ${file.name}: ${offset + 1}-${offset + body.hits.length}`
      + (body.reranked ? `, the first ${body.reranked} re-ranked` : "")
      + (body.notes.length ? ` (${body.notes.join("; ")})` : "")
    : `No hits for ${file.name}`;
  const pager = $("#pager");
  pager.replaceChildren();
  if (body.next) {
    const next = element("button", { id: "next", type: "button" }, ["Next page"]);
    next.addEventListener("click", () => fileSearch(uploaded, body.next));
    pager.append(next);
  }
  // A file cannot live in a URL: the address keeps the text and kind, and says the query was a file.
  const params = new URLSearchParams({ kind: form.kind.value });
  if (text) params.set("q", text);
  history.replaceState(null, "", `/?${params}`);
  startPlayers(results);
}

document.addEventListener("DOMContentLoaded", () => {
  startPlayers();
  const picker = $("#file");
  const form = $("#search");
  // A disabled box is not sent: a search it does not apply to runs without it.
  const updateRerank = () => { form.rerank.disabled = !rerankApplies(picker.files[0]); };
  updateRerank();
  form.q.addEventListener("input", updateRerank);
  form.kind.addEventListener("change", updateRerank);
  picker.addEventListener("change", () => { updateRerank(); if (picker.files.length) fileSearch(picker.files[0]); });
  $("#search").addEventListener("submit", (event) => {
    if (picker.files.length) { event.preventDefault(); fileSearch(picker.files[0]); }
  });
  const drop = $("#drop");
  let depth = 0;
  document.addEventListener("dragenter", (event) => { event.preventDefault(); depth++; drop.hidden = false; });
  document.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; drop.hidden = true; } });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    drop.hidden = true;
    const file = event.dataTransfer.files[0];
    if (file) fileSearch(file);
  });
});
