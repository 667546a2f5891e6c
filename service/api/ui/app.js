// The job page: a small client of the JSON API (/v1/jobs...). Every name and message from the server goes into
// the DOM through textContent, never parsed as HTML. Requests ride on the login cookie (same-origin GETs only).
"use strict";

const POLL_MS = 2000;  // while a job on screen is queued or running
const IDLE_POLL_MS = 10000;  // the newest jobs otherwise, so a job submitted elsewhere shows up
const PAGE_SIZE = 20;
const FORMATS = ["coco", "darwin", "labelstudio", "encord"];
const ACTIVE = new Set(["queued", "running"]);

let timer = null;  // the pending poll of the view on screen
let view = 0;  // bumped on every navigation, so a late answer never draws over the next view

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(path) {
  const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (response.status === 401) {  // the cookie expired: the server shows the login form again
    window.location.reload();
    throw new Error("logged out");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(`${body.error.code}: ${body.error.message}`);
  return body;
}

function show(...nodes) {
  document.getElementById("main").replaceChildren(...nodes);
}

function schedule(again, delayMs) {
  clearTimeout(timer);
  timer = delayMs === null ? null : setTimeout(again, delayMs);
}

function statusCell(status) {
  return el("span", { class: `status status-${status}`, text: status });
}

function progress(p) {
  const text = `${p.items_done}/${p.items_total} items · ${p.frames_done}/${p.frames_planned} frames`;
  const bar = el("progress", { max: String(Math.max(p.frames_planned, 1)), value: String(p.frames_done) });
  return el("span", { class: "progress" }, bar, " ", el("span", { class: "progress-text", text }));
}

function when(epochS) {
  return new Date(epochS * 1000).toLocaleString();
}

// --- jobs list: newest first, a page at a time ------------------------------------------------------------------

async function showJobs(cursors, token) {
  const cursor = cursors[cursors.length - 1];
  const query = `?limit=${PAGE_SIZE}` + (cursor ? `&cursor=${encodeURIComponent(cursor)}` : "");
  let page;
  try {
    page = await api(`/v1/jobs${query}`);
  } catch (error) {
    if (token === view) show(el("p", { class: "error", text: String(error.message) }));
    return;
  }
  if (token !== view) return;
  const rows = page.jobs.map((job) =>
    el(
      "tr",
      { class: "job", "data-job-id": job.id },
      el("td", {}, el("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, class: "mono", text: job.id })),
      el("td", {}, statusCell(job.status)),
      el("td", {}, progress(job.progress)),
      el("td", { class: "mono", text: job.model }),
      el("td", { text: when(job.created_at) }),
      el("td", { class: job.errors.length ? "error" : "muted", text: String(job.errors.length) }),
    ),
  );
  const head = el("tr", {}, ...["job", "status", "progress", "model", "created", "errors"].map((t) => el("th", { text: t })));
  const table = el("table", { id: "jobs" }, el("thead", {}, head), el("tbody", {}, ...rows));
  const pager = el("div", { class: "pager" });
  if (cursors.length > 1) {
    const newer = el("button", { type: "button", id: "newer", text: "← Newer" });
    newer.addEventListener("click", () => navigate(() => showJobs(cursors.slice(0, -1), view)));
    pager.append(newer);
  }
  if (page.next_cursor) {
    const older = el("button", { type: "button", id: "older", text: "Older →" });
    older.addEventListener("click", () => navigate(() => showJobs([...cursors, page.next_cursor], view)));
    pager.append(older);
  }
  const empty = el("p", { class: "muted", text: "No jobs yet: submit one with POST /v1/jobs." });
  show(el("h2", { text: "Jobs" }), rows.length ? table : empty, pager);
  const active = page.jobs.some((job) => ACTIVE.has(job.status));
  const newest = cursors.length === 1;
  schedule(() => showJobs(cursors, token), active ? POLL_MS : newest ? IDLE_POLL_MS : null);
}

// --- one job: its progress, result links, and its items with their previews ------------------------------------

function resultLinks(job) {
  const links = el("p", { class: "links" }, "Results: ");
  if (ACTIVE.has(job.status)) {
    links.append(el("span", { class: "muted", text: "once the job has finished" }));
    return links;
  }
  for (const format of FORMATS) {
    const href = `/v1/jobs/${encodeURIComponent(job.id)}/result?format=${format}`;
    links.append(el("a", { href, class: `result-${format}`, text: format }));
  }
  return links;
}

function picture(src, alt, missing) {
  const img = el("img", { src, alt, class: alt, loading: "lazy" });
  // A 404/409 (no preview stored, job still running) shows text instead of a broken image.
  img.addEventListener("error", () => img.replaceWith(el("span", { class: "placeholder", text: missing })));
  return el("figure", {}, img);
}

function slotPictures(base, slot, named) {
  // A slot with one stored frame (a still) is its preview; a video shows its frame with the most detections (the
  // first of those) beside its contact sheet.
  const query = `?slot=${encodeURIComponent(slot.name)}`;
  const shown = slot.frames.reduce((best, frame) => (frame.detections > best.detections ? frame : best));
  const figures = [picture(`${base}/preview${query}&frame=${shown.frame_index}`, "preview", "no preview")];
  if (slot.frames.length > 1) figures.push(picture(`${base}/sheet${query}`, "sheet", "no contact sheet"));
  const label = `${named ? `${slot.name}: ` : ""}${slot.frames.length} frame(s) drawn`;
  return el("div", { class: "pictures" }, ...figures, el("p", { class: "muted", text: label }));
}

async function addPictures(card, jobId, item) {
  const base = `/v1/jobs/${encodeURIComponent(jobId)}/items/${item.position}`;
  let frames;
  try {
    frames = await api(`${base}/frames`);
  } catch (error) {
    card.append(el("p", { class: "placeholder", text: `no previews (${error.message})` }));
    return;
  }
  for (const warning of frames.warnings) {  // it succeeded with what decoded: say what did not
    card.append(el("p", { class: "warning" }, el("code", { text: warning.code }), " ", warning.message));
  }
  const slots = frames.slots.filter((slot) => slot.frames.length > 0);
  if (slots.length === 0) card.append(el("p", { class: "placeholder", text: "no frames to preview" }));
  for (const slot of slots) card.append(slotPictures(base, slot, frames.slots.length > 1));
}

function itemCard(jobId, item) {
  const card = el("div", { class: "item", "data-position": String(item.position), "data-state": item.state });
  card.append(el("h3", {}, el("span", { class: "item-name", text: item.name }), " ", statusCell(item.state)));
  if (item.error) {
    card.append(el("p", { class: "error" }, el("code", { text: item.error.code }), " ", item.error.message));
  }
  if (item.state === "succeeded") addPictures(card, jobId, item);  // its slots' frames, then their pictures
  return card;
}

function drawItems(cards, jobId, items) {
  // Redraw only the items whose state changed, so loaded pictures are not fetched again every poll.
  for (const item of items) {
    const old = cards.querySelector(`[data-position="${item.position}"]`);
    if (old && old.dataset.state === item.state) continue;
    const card = itemCard(jobId, item);
    if (old) old.replaceWith(card);
    else cards.append(card);
  }
}

function moreButton(jobId, cursor, token) {
  const more = el("button", { type: "button", id: "more-items", text: "More items" });
  more.addEventListener("click", async () => {
    more.remove();
    const query = `?limit=${PAGE_SIZE}&cursor=${encodeURIComponent(cursor)}`;
    const page = await api(`/v1/jobs/${encodeURIComponent(jobId)}/items${query}`);
    if (token !== view) return;
    drawItems(document.getElementById("items"), jobId, page.items);
    if (page.next_cursor) document.getElementById("main").append(moreButton(jobId, page.next_cursor, token));
  });
  return more;
}

// Polls the job and its first page of items; "More items" pages on (pages past the first are not polled).
async function showJob(jobId, token) {
  const id = encodeURIComponent(jobId);
  let job, page;
  try {
    [job, page] = await Promise.all([api(`/v1/jobs/${id}`), api(`/v1/jobs/${id}/items?limit=${PAGE_SIZE}`)]);
  } catch (error) {
    if (token === view) show(el("p", { class: "error", text: String(error.message) }));
    return;
  }
  if (token !== view) return;
  const first = !document.getElementById("items");
  if (first) {
    const title = el("h2", {}, "Job ", el("span", { class: "mono", text: jobId }));
    show(title, el("div", { id: "summary" }), el("div", { id: "items" }));
  }
  const meta = el("span", { class: "mono muted", text: job.model });
  document.getElementById("summary").replaceChildren(
    el("p", {}, statusCell(job.status), " ", progress(job.progress), " ", meta),
    resultLinks(job),
  );
  drawItems(document.getElementById("items"), jobId, page.items);
  if (first && page.next_cursor) document.getElementById("main").append(moreButton(jobId, page.next_cursor, token));
  schedule(() => showJob(jobId, token), ACTIVE.has(job.status) ? POLL_MS : null);
}

// --- routing: #/ (jobs) and #/jobs/ID ---------------------------------------------------------------------------

function navigate(draw) {
  view += 1;
  clearTimeout(timer);
  show(el("p", { class: "muted", text: "Loading…" }));
  draw();
}

function route() {
  const match = /^#\/jobs\/([^/]+)$/.exec(window.location.hash);
  if (match) navigate(() => showJob(decodeURIComponent(match[1]), view));
  else navigate(() => showJobs([null], view));
}

window.addEventListener("hashchange", route);
route();
