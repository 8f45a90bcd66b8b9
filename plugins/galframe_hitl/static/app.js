// galframe labeling page: plain JavaScript, no build step.
// Every string that comes from the data or the store is put on the page as text (textContent,
// attributes), never parsed as HTML.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
if (token) {  // the server answered the link with an HttpOnly cookie: keep the token out of the address bar
  params.delete("token");
  history.replaceState(null, "", location.pathname + (params.toString() ? `?${params}` : ""));
}
const $ = (id) => document.getElementById(id);
const state = { round: null, classes: [], bands: [], queue: [], index: 0, view: "rgb", detail: null, busy: false,
  me: { mode: "single", labeler: null, role: null } };

// an element with text content (and optional class), built without HTML parsing
function el(tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (className) e.className = className;
  return e;
}

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  if (token) h["X-Galframe-Token"] = token;
  return h;
}

async function api(path, body) {
  const res = await fetch(path, body === undefined ? { headers: headers(false) }
    : { method: "POST", headers: headers(true), body: JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || data);
    throw new Error(`${res.status}: ${detail}`);
  }
  return data;
}

function labeler() {
  if (state.me.mode === "team") return state.me.labeler;
  const name = $("labeler").value.trim() || "anonymous";
  localStorage.setItem("galframe-labeler", name);
  return name;
}

// who the page is signed in as; in team mode the server attributes every answer to that labeler
async function signIn() {
  const me = await api("api/me");
  state.me = me;
  const box = $("labeler");
  if (me.mode === "team") {
    $("login").hidden = me.labeler !== null;
    $("logout").hidden = me.labeler === null;
    box.readOnly = true;
    box.value = me.labeler === null ? "" : me.labeler + (me.role === "admin" ? " (admin)" : "");
  }
  return me.mode === "single" || me.labeler !== null;
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    await api("api/login", { token: $("token-input").value.trim() });
    $("token-input").value = "";
    if (await signIn()) act(() => loadState(false));
  } catch (e) {
    status(`not signed in: ${e.message}`, "error");
  }
});
$("logout").addEventListener("click", async () => {
  await api("api/logout", {});
  location.reload();
});

function status(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = kind || "";
}

function requestId() {
  return (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`);
}

function current() { return state.queue[state.index]; }

// the next galaxy still to answer: one nobody answered (single-user mode), or one you did not (team mode)
function isOpen(q) { return (state.me.mode === "team" ? q.mine : q.answer) == null; }

function firstOpen(from) {
  const n = state.queue.length;
  for (let k = 0; k < n; k++) {
    const i = (from + k) % n;
    if (isOpen(state.queue[i])) return i;
  }
  return -1;
}

async function loadState(keepPosition) {
  const s = await api("api/state");
  const newRound = s.round !== state.round;
  const keepId = keepPosition && current() ? current().id : null;
  Object.assign(state, { round: s.round, classes: s.classes, bands: s.bands, queue: s.queue });
  $("round-label").textContent = s.round === null ? "no round yet" : `round ${s.round}`;
  $("progress").max = Math.max(s.progress.total, 1);
  $("progress").value = s.progress.done;
  $("progress-text").textContent = `${s.progress.done} / ${s.progress.total}`;
  $("model-version").textContent = s.model_version ? `model ${s.model_version} · ${s.acquisition || ""}` : (s.acquisition || "");
  if (newRound || !state.classButtons) drawControls();
  if (keepId !== null && !newRound) {
    const i = state.queue.findIndex((q) => q.id === keepId);
    state.index = i >= 0 ? i : 0;
  } else {
    const i = firstOpen(0);
    state.index = i >= 0 ? i : 0;
  }
  drawQueue();
  $("done-overlay").hidden = !(state.queue.length === 0 || firstOpen(0) === -1);
  if (current()) await show(state.index);
}

function drawControls() {
  const box = $("classes");
  box.replaceChildren();
  state.classes.forEach((c, i) => {
    const b = el("button", null, "class");
    b.dataset.label = c;
    if (i < 10) b.append(el("kbd", i < 9 ? i + 1 : 0), " ");
    b.append(c);  // a text node: a class name is never HTML
    b.addEventListener("click", () => answer(c));
    box.appendChild(b);
  });
  state.classButtons = true;
  const bands = $("bands");
  bands.replaceChildren();
  for (const v of ["rgb", ...state.bands]) {
    const b = document.createElement("button");
    b.textContent = v;
    b.dataset.view = v;
    b.addEventListener("click", () => { state.view = v; drawStamp(); });
    bands.appendChild(b);
  }
}

function stampUrl(id, view) { return `api/stamp/${id}.png?band=${encodeURIComponent(view)}`; }

function drawStamp() {
  const item = current();
  if (!item) return;
  $("stamp").src = stampUrl(item.id, state.view);
  for (const b of $("bands").children) b.classList.toggle("active", b.dataset.view === state.view);
}

function drawQueue() {
  const box = $("queue");
  box.replaceChildren();
  state.queue.forEach((q, i) => {
    const s = document.createElement("span");
    s.className = (q.answer === null ? "" : (q.answer === "skip" ? "skip" : "label")) + (i === state.index ? " current" : "");
    s.title = `#${q.id}` + (q.answer ? ` → ${q.answer} (${q.labeler})` : "") + (q.mine ? ` · yours: ${q.mine}` : "");
    s.addEventListener("click", () => show(i));
    box.appendChild(s);
  });
}

async function show(i) {
  if (!state.queue.length) return;
  state.index = (i + state.queue.length) % state.queue.length;
  const item = current();
  drawStamp();
  drawQueue();
  $("object-id").textContent = `#${item.id}`;
  $("similar").replaceChildren();  // what "more like this" listed belonged to the object shown before
  $("position").textContent = `(${state.index + 1} of ${state.queue.length})`;
  const d = await api(`api/object/${item.id}`);
  if (current() !== item) return;  // the person moved on meanwhile
  state.detail = d;
  $("answer-now").textContent = (d.answer ? `answered: ${d.answer}` : "") +
    (d.mine && d.mine !== d.answer ? ` (yours: ${d.mine})` : "");
  for (const b of $("classes").children) b.classList.toggle("chosen", b.dataset.label === d.answer);
  drawModel(d.info || {});
}

function drawModel(info) {
  const probs = info.probs || {};
  const table = $("probs");
  table.replaceChildren();
  const top = Object.keys(probs).reduce((a, b) => (probs[a] >= probs[b] ? a : b), null);
  for (const c of state.classes) {
    const p = typeof probs[c] === "number" ? probs[c] : undefined;
    const tr = el("tr", null, c === top ? "top" : "");
    const fill = el("div");
    fill.style.width = `${((p || 0) * 100).toFixed(1)}%`;
    const bar = el("div", null, "bar");
    bar.appendChild(fill);
    const cell = el("td");
    cell.appendChild(bar);
    tr.append(el("td", c), cell, el("td", p === undefined ? "–" : p.toFixed(3)));
    table.appendChild(tr);
  }
  const parts = [];
  const num = (x) => typeof x === "number";
  if (num(info.entropy)) parts.push(`entropy ${info.entropy.toFixed(3)} nats`);
  if (num(info.margin)) parts.push(`margin ${info.margin.toFixed(3)}`);
  if (num(info.bald)) parts.push(`BALD ${info.bald.toFixed(3)}`);
  if (info.score !== undefined && info.score !== null) parts.push(`acquisition score ${Number(info.score).toFixed(3)}`);
  $("uncertainty").textContent = parts.join(" · ");
  const nb = $("neighbours");
  nb.replaceChildren();
  for (const n of info.neighbours || []) nb.appendChild(stampFigure(n.id, n.label || "(undone)", `#${n.id}`));
  if (!(info.neighbours || []).length) nb.textContent = "none labelled yet";
}

// "more like this": the object's nearest neighbours in the embedding index the page was served with
function stampFigure(id, caption, detail) {
  const f = el("figure");
  const img = el("img");
  img.src = stampUrl(id, "rgb");
  img.alt = `#${id}`;
  const cap = el("figcaption", caption);
  cap.append(el("br"), detail);
  f.append(img, cap);
  return f;
}

async function moreLikeThis() {
  const item = current();
  if (!item) return;
  const box = $("similar");
  box.textContent = "searching…";
  try {
    const r = await api(`api/similar/${item.id}?k=8`);
    if (current() !== item) return;  // the person moved on meanwhile
    box.replaceChildren();
    for (const n of r.neighbours) {
      const near = typeof n.similarity === "number" ? `similarity ${n.similarity.toFixed(3)}` : `distance ${n.distance.toFixed(3)}`;
      box.appendChild(stampFigure(n.id, n.label || "unlabelled", `#${n.id} · ${near}`));
    }
    if (!r.neighbours.length) box.textContent = "no neighbours";
  } catch (e) {
    if (current() === item) box.textContent = `not available: ${e.message}`;
  }
}

// actions run one after another, in the order the person gave them (fast typing loses nothing)
let chain = Promise.resolve();
function act(fn) {
  const run = chain.then(async () => {
    state.busy = true;
    try { await fn(); } finally { state.busy = false; }
  });
  chain = run.catch((e) => status(e.message, "error"));
  return chain;
}

function answer(label) {
  return act(async () => {
    const item = current();
    if (!item) return;
    const body = { id: item.id, request_id: requestId() };
    if (state.me.mode === "single") body.labeler = labeler();
    if (label === null) body.skip = true; else body.label = label;
    try {
      const r = await api("api/answer", body);
      item.answer = label === null ? "skip" : label;
      item.labeler = labeler();
      item.mine = item.answer;
      status(`saved #${item.id} → ${item.answer}`, "ok");
      setProgress(r.progress);
      const next = firstOpen(state.index + 1);
      if (next >= 0) await show(next); else await loadState(true);
    } catch (e) {
      status(`not saved: ${e.message}`, "error");
    }
  });
}

function undo() {
  return act(async () => {
    try {
      const body = { request_id: requestId() };
      if (state.me.mode === "single") body.labeler = labeler();
      const r = await api("api/undo", body);
      setProgress(r.progress);
      await loadState(false);
      const i = state.queue.findIndex((q) => q.id === r.undone.object_id);
      if (i >= 0) await show(i);
      status(`undone: #${r.undone.object_id} (${r.undone.label || r.undone.action})`, "ok");
    } catch (e) {
      status(`nothing undone: ${e.message}`, "error");
    }
  });
}

function setProgress(p) {
  $("progress").max = Math.max(p.total, 1);
  $("progress").value = p.done;
  $("progress-text").textContent = `${p.done} / ${p.total}`;
}

document.addEventListener("keydown", (ev) => {
  if (ev.target instanceof HTMLInputElement || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const k = ev.key;
  if (/^[0-9]$/.test(k)) {
    const i = k === "0" ? 9 : Number(k) - 1;
    if (i < state.classes.length) { ev.preventDefault(); answer(state.classes[i]); }
  } else if (k === "s") { ev.preventDefault(); answer(null); }
  else if (k === "u") { ev.preventDefault(); undo(); }
  else if (k === "v") {
    const views = ["rgb", ...state.bands];
    state.view = views[(views.indexOf(state.view) + 1) % views.length];
    drawStamp();
  }
  else if (k === "m") { ev.preventDefault(); moreLikeThis(); }
  else if (k === "ArrowRight") show(state.index + 1);
  else if (k === "ArrowLeft") show(state.index - 1);
});

$("skip").addEventListener("click", () => answer(null));
$("undo").addEventListener("click", () => undo());
$("next").addEventListener("click", () => show(state.index + 1));
$("prev").addEventListener("click", () => show(state.index - 1));
$("more").addEventListener("click", () => moreLikeThis());
$("labeler").value = params.get("labeler") || localStorage.getItem("galframe-labeler") || "anonymous";

// other labelers answer too, and a new round appears when the model has retrained
setInterval(() => {
  if (!state.busy && (state.me.mode === "single" || state.me.labeler !== null)) act(() => loadState(true));
}, 5000);
act(() => signIn().then((ok) => (ok ? loadState(false) : status("sign in to label", "error")))
  .catch((e) => status(`cannot load: ${e.message}`, "error")));
