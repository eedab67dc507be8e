// The page of `avsegformer serve`: upload (or the demo clip), follow the job, show the result.
// Plain JavaScript, no build step. Text from the server is always set with textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { config: null, job: null, parent: null, timer: null, upload: null };
const POLL_MS = 400;
const SVG = "http://www.w3.org/2000/svg";

// ---------------------------------------------------------------------------------------
// Messages and status

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind === "info" ? "message info" : "message";
  box.hidden = !text;
}

function setStatus(text, done, total) {
  $("status").hidden = false;
  $("status-text").textContent = text;
  const bar = $("progress");
  if (total > 0) {
    bar.max = total;
    bar.value = done;
  } else {
    bar.removeAttribute("value"); // indeterminate
  }
}

function busy(on) {
  for (const id of ["demo", "rerun", "file", "audio-file"]) $(id).disabled = on;
  $("cancel").hidden = !on;
}

function errorText(xhrOrResponse, body) {
  try {
    const parsed = typeof body === "string" ? JSON.parse(body) : body;
    if (parsed && parsed.error) return parsed.error;
  } catch (e) { /* not JSON */ }
  return `the server answered ${xhrOrResponse.status} ${xhrOrResponse.statusText || ""}`.trim();
}

// ---------------------------------------------------------------------------------------
// Settings

async function loadConfig() {
  const response = await fetch("/api/config");
  const config = await response.json();
  state.config = config;
  const model = $("model");
  for (const m of config.models) {
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = m.label;
    model.append(option);
  }
  const precision = $("precision");
  for (const p of config.precisions) {
    const option = document.createElement("option");
    option.value = p;
    option.textContent = p === "auto" ? "auto (bf16 on CUDA, fp32 on CPU)" : p;
    precision.append(option);
  }
  const fps = $("fps");
  fps.min = config.fps.min;
  fps.max = config.fps.max;
  fps.value = config.fps.default;
  $("limits").textContent =
    `Videos up to ${megabytes(config.max_upload_mb)} MB, any format FFmpeg reads. ` +
    `Runs on ${config.device}; results are kept ${Math.round(config.keep_minutes)} min.`;
  $("footer").textContent = `avsegformer ${config.version}`;
}

function settingsQuery(extra = {}) {
  const params = new URLSearchParams({
    model: $("model").value,
    fps: $("fps").value,
    precision: $("precision").value,
    ...extra,
  });
  return params.toString();
}

function checkFps() {
  const value = Number($("fps").value);
  const { min, max } = state.config.fps;
  if (!(value >= min && value <= max)) {
    showMessage(`Samples per second must lie between ${min} and ${max}.`);
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------
// Starting jobs

function checkSize(file) {
  const limit = state.config.max_upload_bytes;
  if (file.size > limit) {
    const mb = (file.size / 1e6).toFixed(1);
    showMessage(`${file.name} is ${mb} MB: uploads are limited to ` +
      `${megabytes(state.config.max_upload_mb)} MB ` +
      "(the server's --max-upload-mb).");
    return false;
  }
  return true;
}

// POST a file as the request body (no multipart), with upload progress.
function postFile(url, file, what) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    state.upload = xhr;
    xhr.open("POST", url);
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) {
        setStatus(`Uploading ${what}: ${Math.round(100 * event.loaded / event.total)} %`,
          event.loaded, event.total);
      }
    };
    xhr.onload = () => {
      state.upload = null;
      if (xhr.status === 201) resolve(JSON.parse(xhr.responseText));
      else { failed(errorText(xhr, xhr.responseText)); resolve(null); }
    };
    xhr.onerror = () => {
      state.upload = null;
      failed(`The upload of ${what} failed (the connection was closed). ` +
        `Is the file over ${megabytes(state.config.max_upload_mb)} MB, or did the server stop?`);
      resolve(null);
    };
    xhr.onabort = () => { state.upload = null; failed("Upload cancelled."); resolve(null); };
    setStatus(`Uploading ${what}`, 0, file.size);
    xhr.send(file);
  });
}

async function postEmpty(url) {
  const response = await fetch(url, { method: "POST" });
  const body = await response.text();
  if (response.status === 201) return JSON.parse(body);
  failed(errorText(response, body));
  return null;
}

function failed(text) {
  busy(false);
  $("status").hidden = true;
  showMessage(text);
}

async function startUpload(file) {
  showMessage("");
  if (!file || !checkFps() || !checkSize(file)) return;
  busy(true);
  const job = await postFile(`/api/jobs?${settingsQuery({ name: file.name })}`, file, file.name);
  if (job) follow(job);
}

async function startDemo() {
  showMessage("");
  if (!checkFps()) return;
  busy(true);
  setStatus("Asking for the demo clip", 0, 0);
  const job = await postEmpty(`/api/demo?${settingsQuery()}`);
  if (job) follow(job);
}

async function startRerun() {
  showMessage("");
  if (!state.job || !checkFps()) return;
  const audio = document.querySelector("input[name=audio]:checked").value;
  const base = `/api/jobs/${state.job.id}/rerun?`;
  let job = null;
  if (audio === "clip") {
    const file = $("audio-file").files[0];
    if (!file) { showMessage("Choose the clip whose sound to use."); return; }
    if (!checkSize(file)) return;
    busy(true);
    job = await postFile(base + settingsQuery({ audio, name: file.name }), file, file.name);
  } else {
    busy(true);
    setStatus("Asking for the re-run", 0, 0);
    job = await postEmpty(base + settingsQuery({ audio }));
  }
  if (job) follow(job);
}

// ---------------------------------------------------------------------------------------
// Following a job

function follow(job) {
  busy(true);
  history.replaceState(null, "", `#job=${job.id}`);
  state.following = job.id;
  poll(job.id);
}

async function poll(id) {
  clearTimeout(state.timer);
  if (state.following !== id) return;
  let job;
  try {
    const response = await fetch(`/api/jobs/${id}`);
    const body = await response.text();
    if (!response.ok) { failed(errorText(response, body)); return; }
    job = JSON.parse(body);
  } catch (e) {
    setStatus("The server does not answer; trying again", 0, 0);
    state.timer = setTimeout(() => poll(id), 2000);
    return;
  }
  if (job.state === "queued") {
    setStatus(job.position === 1 ? "Waiting: next in the queue"
      : `Waiting: position ${job.position} in the queue`, 0, 0);
  } else if (job.state === "running") {
    const text = job.total > 0 && job.phase === "segmenting"
      ? `Segmenting ${job.name}: sample ${job.done} of ${job.total}`
      : `${job.phase[0].toUpperCase()}${job.phase.slice(1)}`;
    setStatus(text, job.done, job.total);
  } else if (job.state === "done") {
    busy(false);
    $("status").hidden = true;
    await showResult(job);
    return;
  } else if (job.state === "failed") {
    failed(job.error.startsWith(job.name) ? job.error : `${job.name}: ${job.error}`);
    return;
  } else {
    failed("The job was cancelled.");
    return;
  }
  state.timer = setTimeout(() => poll(id), POLL_MS);
}

async function cancel() {
  if (state.upload) { state.upload.abort(); return; }
  const id = state.following;
  state.following = null;
  if (id) await fetch(`/api/jobs/${id}`, { method: "DELETE" });
  failed("Cancelled.");
}

// ---------------------------------------------------------------------------------------
// The result

// Sizes as the server words them (app.py: megabytes).
function megabytes(mb) { return String(Number(mb.toFixed(1))); }
function seconds(t) { return `${t.toFixed(2)} s`; }
function percent(f) { return `${(100 * f).toFixed(1)} %`; }

function audioLabel(job) {
  if (job.audio === "silence") return "with the sound silenced";
  if (job.audio === "clip") return `with the sound of ${job.audio_name}`;
  return "with its own sound";
}

async function showResult(job) {
  state.job = job;
  state.parent = null;
  if (job.parent) {
    const response = await fetch(`/api/jobs/${job.parent}`);
    if (response.ok) state.parent = await response.json();
    if (state.parent && state.parent.state !== "done") state.parent = null;
  }
  const r = job.result;
  $("result").hidden = false;
  $("result-title").textContent = `${job.name}, ${audioLabel(job)}`;
  $("result-info").textContent =
    `${r.num_samples} samples over ${seconds(r.duration)} (${r.fps} per second), ` +
    `model ${r.model.name} (${r.model.task.toUpperCase()}), ${r.precision} on ${r.device}, ` +
    `${r.seconds.toFixed(1)} s of work.`;
  const notes = $("notes");
  notes.replaceChildren(...job.notes.map((text) => {
    const li = document.createElement("li");
    li.textContent = text;
    return li;
  }));

  const left = $("original");
  const right = $("overlay");
  $("left-note").hidden = true;
  $("right-note").hidden = true;
  if (state.parent) {
    $("left-caption").textContent = "Overlay with its own sound";
    left.src = state.parent.result.files.overlay || state.parent.result.files.input;
    $("right-caption").textContent = `Overlay ${audioLabel(job)}`;
  } else {
    $("left-caption").textContent = "Original";
    left.src = r.files.input;
    $("right-caption").textContent = "Sounding objects (overlay)";
  }
  if (r.files.overlay) {
    right.src = r.files.overlay;
  } else {
    right.removeAttribute("src");
    $("right-note").textContent = "No overlay video: it could not be written (see the notes).";
    $("right-note").hidden = false;
  }

  renderStrip(r.frames);
  renderPlot(r, state.parent ? state.parent.result : null);

  $("dl-zip").href = r.files.masks_zip + "?download=1";
  $("dl-zip").download = r.downloads.masks_zip;
  $("dl-summary").href = r.files.summary + "?download=1";
  $("dl-summary").download = r.downloads.summary;
  $("dl-overlay").hidden = !r.files.overlay;
  if (r.files.overlay) {
    $("dl-overlay").href = r.files.overlay + "?download=1";
    $("dl-overlay").download = r.downloads.overlay;
  }
  $("result").scrollIntoView({ behavior: "smooth", block: "start" });
}

function unplayable(video, note) {
  video.addEventListener("error", () => {
    if (!video.getAttribute("src")) return;
    note.textContent = "This browser cannot play this file's format: " +
      "the overlay (H.264 and AAC) shows the same pictures.";
    note.hidden = false;
  });
}

function renderStrip(frames) {
  const strip = $("strip");
  strip.replaceChildren(...frames.map((frame) => {
    const figure = document.createElement("figure");
    figure.dataset.time = frame.frame_time;
    const img = document.createElement("img");
    img.src = frame.mask;
    img.alt = `mask at ${seconds(frame.frame_time)}`;
    img.loading = "lazy";
    const caption = document.createElement("figcaption");
    caption.textContent = `${seconds(frame.frame_time)} · ${percent(frame.area)}`;
    figure.append(img, caption);
    figure.addEventListener("click", () => seek(frame.frame_time));
    return figure;
  }));
}

function seek(t) {
  for (const id of ["original", "overlay"]) $(id).currentTime = t;
  markTime(t);
}

// The plot: segmented area (all sounding classes) over time; per class for AVSS models;
// the earlier run's area dashed, when this is a re-run.
function renderPlot(result, earlier) {
  const svg = $("plot");
  const width = Math.max(svg.clientWidth || 900, 300);
  const height = 190;
  const pad = { left: 44, right: 12, top: 10, bottom: 26 };
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const duration = Math.max(result.duration, 1e-3);
  const series = [];
  if (earlier) {
    series.push({ name: "with its own sound", colour: "#8a94a3", dashed: true,
      points: earlier.frames.map((f) => [f.frame_time, f.area]) });
  }
  series.push({ name: result.model.binary ? "sounding area" : "all sounding classes",
    colour: result.model.binary ? "#d6332f" : "#1d2330",
    points: result.frames.map((f) => [f.frame_time, f.area]) });
  if (!result.model.binary) {
    // The 8 classes with the most area over the video, largest first.
    const perClass = result.classes.map((c) => ({ ...c, points: result.frames.map((f) => {
      const hit = f.classes.find((k) => k.id === c.id);
      return [f.frame_time, hit ? hit.fraction : 0];
    }) }));
    const total = (c) => c.points.reduce((sum, p) => sum + p[1], 0);
    perClass.sort((a, b) => total(b) - total(a));
    for (const c of perClass.slice(0, 8)) {
      series.push({ name: c.name, colour: c.colour, points: c.points });
    }
  }
  // A round top and 3-5 gridlines: steps of 0.5, 1, 2, 2.5, 5, 10, 20 or 25 %.
  const top = Math.max(0.01, ...series.flatMap((s) => s.points.map((p) => p[1])));
  const tick = [0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25].find((d) => top / d <= 5) || 0.25;
  const yMax = Math.min(1, Math.ceil(top / tick - 1e-9) * tick);
  const x = (t) => pad.left + (width - pad.left - pad.right) * (t / duration);
  const y = (v) => height - pad.bottom - (height - pad.top - pad.bottom) * (v / yMax);
  const add = (name, attrs, text) => {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    svg.append(el);
    return el;
  };
  const digits = tick < 0.01 ? 1 : 0;
  for (let v = 0; v <= yMax + 1e-9; v += tick) {
    add("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" });
    add("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" },
      `${(100 * v).toFixed(digits)}%`);
  }
  const step = duration > 30 ? 10 : duration > 12 ? 2 : 1;
  for (let t = 0; t <= duration + 1e-9; t += step) {
    add("text", { x: x(t), y: height - 8, "text-anchor": "middle" }, `${t}s`);
  }
  add("line", { x1: pad.left, x2: pad.left, y1: pad.top, y2: height - pad.bottom, class: "axis" });
  add("line", { x1: pad.left, x2: width - pad.right, y1: height - pad.bottom,
    y2: height - pad.bottom, class: "axis" });
  for (const s of series) {
    const points = s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    add("polyline", { points, fill: "none", stroke: s.colour, "stroke-width": s.dashed ? 2 : 2.5,
      "stroke-dasharray": s.dashed ? "6 4" : "none" });
    for (const [t, v] of s.points) {
      add("circle", { cx: x(t), cy: y(v), r: s.dashed ? 2 : 3, fill: s.colour });
    }
  }
  const now = $("overlay").currentTime || 0; // a redraw (resize) keeps the playhead's place
  state.playhead = add("line", { x1: x(now), x2: x(now), y1: pad.top, y2: height - pad.bottom,
    class: "playhead" });
  state.plotX = x;
  $("legend").replaceChildren(...series.map((s) => {
    const span = document.createElement("span");
    span.textContent = s.name;
    span.style.setProperty("--swatch", s.colour);
    if (s.dashed) span.className = "dashed";
    return span;
  }));
}

function markTime(t) {
  if (state.playhead && state.plotX) {
    const px = state.plotX(t);
    state.playhead.setAttribute("x1", px);
    state.playhead.setAttribute("x2", px);
  }
  let current = null;
  for (const figure of $("strip").children) {
    if (Number(figure.dataset.time) <= t + 1e-3) current = figure;
    figure.classList.remove("current");
  }
  if (current) current.classList.add("current");
}

async function playBoth() {
  const left = $("original");
  const right = $("overlay");
  left.muted = true;
  left.currentTime = right.currentTime;
  await Promise.allSettled([left.play(), right.play()]);
}

// ---------------------------------------------------------------------------------------
// Wiring

function wire() {
  $("file").addEventListener("change", (e) => startUpload(e.target.files[0]));
  $("demo").addEventListener("click", startDemo);
  $("rerun").addEventListener("click", startRerun);
  $("cancel").addEventListener("click", cancel);
  $("play-both").addEventListener("click", playBoth);
  $("audio-file").addEventListener("change", () => {
    document.querySelector("input[name=audio][value=clip]").checked = true;
  });
  $("overlay").addEventListener("timeupdate", (e) => markTime(e.target.currentTime));
  unplayable($("original"), $("left-note"));
  unplayable($("overlay"), $("right-note"));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) startUpload(e.dataTransfer.files[0]);
  });
  window.addEventListener("resize", () => {
    if (state.job) renderPlot(state.job.result, state.parent ? state.parent.result : null);
  });
}

async function main() {
  wire();
  busy(false);
  try {
    await loadConfig();
  } catch (e) {
    showMessage("The server does not answer: is `avsegformer serve` running?");
    return;
  }
  const resumed = /#job=([0-9a-f]{32})/.exec(location.hash);
  if (resumed) follow({ id: resumed[1] });
}

main();
