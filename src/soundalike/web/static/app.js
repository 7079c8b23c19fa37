// soundalike search page: plain JavaScript over the JSON API (see soundalike/web/app.py).
// No build step: this file is served as it is.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  info: null,       // GET /api/info
  file: null,       // the chosen query file (a File)
  fileUrl: null,    // its blob: URL, for the input-clip players
  busy: false,
};

// ------------------------------------------------------------------ formatting

function clock(seconds) {
  const m = Math.floor(seconds / 60);
  const s = seconds - 60 * m;
  return `${m}:${s.toFixed(1).padStart(4, "0")}`;
}

// Whole seconds as m:ss; a negative offset (the excerpt starts before the song does) gets a minus sign.
function minSec(seconds) {
  const whole = Math.round(Math.abs(seconds));
  const text = `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
  return seconds <= -0.5 ? `−${text}` : text;
}

// Landmark matches try the query at a few speeds; 1.03 means the excerpt plays 3 % fast.
function speedText(speed) {
  if (Math.abs(speed - 1) < 1e-6) return "";
  const fine = Math.abs(speed - 1) < 0.01;  // off the default 1 % grid (fingerprint.speed_factors)
  const percent = (Math.abs(speed - 1) * 100).toFixed(fine ? 1 : 0);
  return ` · speed ×${speed.toFixed(fine ? 3 : 2)} (the excerpt plays ${percent} % ${speed > 1 ? "fast" : "slow"})`;
}

function span(start, length) {
  return `${clock(start)}–${clock(start + length)}`;
}

function megabytes(n) {
  return `${(n / 1e6).toFixed(1)} MB`;
}

// The API answers errors as {"detail": "..."}; FastAPI's own validation as {"detail": [{loc, msg}]}.
function errorText(status, body) {
  let detail = body && body.detail;
  if (Array.isArray(detail)) {
    detail = detail.map((d) => `${(d.loc || []).slice(1).join(".") || "request"}: ${d.msg}`).join("; ");
  }
  if (!detail) detail = `the server answered ${status}`;
  if (status === 413) return `Too large: ${detail}`;
  if (status >= 500) return `Server error (${status}): ${detail}`;
  return detail;
}

function showError(box, message) {
  box.textContent = message;
  box.hidden = !message;
}

// ------------------------------------------------------------------ requests

// POST with upload progress (fetch cannot report it). Resolves with the parsed JSON; rejects
// with an Error whose message is ready to show.
function post(url, body, onUploadProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.responseType = "json";
    if (typeof body === "string") xhr.setRequestHeader("Content-Type", "application/json");
    if (onUploadProgress) {
      xhr.upload.onprogress = (e) => e.lengthComputable && onUploadProgress(e.loaded / e.total);
    }
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300 && xhr.response) resolve(xhr.response);
      else reject(new Error(errorText(xhr.status, xhr.response)));
    };
    xhr.onerror = () => reject(new Error("The server could not be reached (or closed the connection)."));
    xhr.send(body);
  });
}

// Status line with a spinner and an elapsed-time counter while a request runs.
function progress(statusBox, buttons) {
  const started = performance.now();
  let phase = "";
  const render = () => {
    const seconds = ((performance.now() - started) / 1000).toFixed(0);
    statusBox.replaceChildren();
    const spinner = document.createElement("span");
    spinner.className = "spinner";
    spinner.setAttribute("aria-hidden", "true");
    statusBox.append(spinner, ` ${phase} ${seconds} s`);
  };
  const timer = setInterval(render, 500);
  buttons.forEach((b) => (b.disabled = true));
  statusBox.closest("section").setAttribute("aria-busy", "true");
  return {
    phase(text) { phase = text; render(); },
    done(text) {
      clearInterval(timer);
      buttons.forEach((b) => (b.disabled = false));
      statusBox.closest("section").removeAttribute("aria-busy");
      statusBox.textContent = text || "";
    },
  };
}

// ------------------------------------------------------------------ search

function chooseFile(file) {
  showError($("error"), "");
  if (!file) return;
  if (state.info && file.size > state.info.max_upload_bytes) {
    showError($("error"), `${file.name} is ${megabytes(file.size)}; the limit is ${megabytes(state.info.max_upload_bytes)}.`);
    return;
  }
  state.file = file;
  $("drop-text").textContent = `${file.name} (${megabytes(file.size)})`;
  $("search-button").disabled = state.busy;
}

async function searchByFile(event) {
  event.preventDefault();
  if (!state.file || state.busy) return;
  const form = new FormData();
  form.append("file", state.file, state.file.name);
  const maxResults = $("max-results").value;
  if (maxResults) form.append("max_results", maxResults);
  if ($("exclude-self").checked) form.append("exclude_self", "true");
  await runSearch(form, `Searching for songs like ${state.file.name}…`, state.file);
}

async function searchByText(event) {
  event.preventDefault();
  const text = $("text-input").value.trim();
  if (!text || state.busy) return;
  const body = { text };
  const maxResults = parseInt($("max-results").value, 10);
  if (maxResults) body.max_results = maxResults;
  await runSearch(JSON.stringify(body), `Searching for “${text}”…`, null);
}

async function runSearch(body, what, file) {
  state.busy = true;
  showError($("error"), "");
  const run = progress($("status"), [$("search-button"), $("text-button")]);
  run.phase(file ? "Uploading…" : what);
  const url = file ? "/api/search" : "/api/search/text";
  try {
    const answer = await post(url, body, (fraction) => {
      run.phase(fraction < 1 ? `Uploading ${Math.round(fraction * 100)} %…` : what);
    });
    run.done(`${answer.results.length} songs in ${(answer.elapsed_ms / 1000).toFixed(1)} s`);
    showResults(answer, file);
  } catch (err) {
    run.done("");
    // What is on screen answered the previous query: next to this error it would read as its answer.
    $("results-section").hidden = true;
    $("results").replaceChildren();
    showIdentified(null, []);
    showError($("error"), err.message);
  } finally {
    state.busy = false;
    $("search-button").disabled = !state.file;
  }
}

function showResults(answer, file) {
  if (state.fileUrl) URL.revokeObjectURL(state.fileUrl);
  state.fileUrl = file ? URL.createObjectURL(file) : null;
  const list = $("results");
  list.replaceChildren();
  const query = answer.query_text != null ? `“${answer.query_text}”`
    : `${answer.query_clips} clips of ${answer.query_seconds.toFixed(1)} s`;
  $("results-summary").textContent =
    `Query: ${query} · embedder ${answer.embedder} · clip length ${answer.clip_s} s`;
  showIdentified(answer.identified, answer.results);
  if (!answer.results.length) {
    const empty = document.createElement("li");
    empty.textContent = "No matches.";
    list.append(empty);
  }
  answer.results.forEach((song, i) => list.append(songItem(song, answer, i === 0, file)));
  $("results-section").hidden = false;
}

// How the page names a song: its title (else its file name) and its file name.
function songNames(song) {
  const fileName = song.path ? song.path.split(/[\\/]/).pop() : song.track_id.slice(0, 12);
  return { title: song.title || fileName, fileName };
}

// The banner above the list: the recording the excerpt was cut from, and where (absent: hidden).
function showIdentified(identified, results) {
  const box = $("identified");
  $("identified-audio").replaceChildren();
  box.hidden = !identified;
  if (!identified) return;
  const song = results.find((s) => s.track_id === identified.track_id);
  const names = song ? songNames(song) : { title: identified.track_id.slice(0, 12), fileName: "" };
  $("identified-title").textContent = names.title;
  $("identified-file").textContent = names.fileName === names.title ? "" : names.fileName;
  showOffset(box, $("identified-offset"), $("identified-speed"), $("identified-audio"),
    identified.track_id, identified, names.title);
}

// A landmark match (the banner's or a song's): where the excerpt lies, at what speed, the
// evidence as the tooltip of `box`, and a player from there into `audioBox`.
function showOffset(box, offset, speed, audioBox, trackId, m, title) {
  box.title = `${m.aligned_hits} of the excerpt's ${m.query_hashes} landmarks agree on this offset: ` +
    `${(m.peak_share * 100).toFixed(0)} % of all its landmark matches with this song`;
  offset.textContent = minSec(m.offset_s);
  offset.dataset.offsetS = m.offset_s;
  speed.textContent = speedText(m.speed);
  if (state.info && state.info.clip_audio) audioBox.append(offsetPlayer(trackId, m.offset_s, title));
}

// The catalogue song from where the excerpt lies in it (one clip's length, cut by the server).
function offsetPlayer(trackId, offsetS, name) {
  return player(clipAudioUrl(trackId, Math.max(0, offsetS)), "offset-audio", `${name} from ${minSec(offsetS)}`);
}

function clipAudioUrl(trackId, startS) {
  return `/api/clips/${encodeURIComponent(trackId)}/audio?start_s=${startS}`;
}

function songItem(song, answer, open, file) {
  const item = $("song-template").content.firstElementChild.cloneNode(true);
  item.dataset.trackId = song.track_id;
  const { title, fileName } = songNames(song);
  item.querySelector(".rank").textContent = song.rank;
  item.querySelector(".title").textContent = title;
  item.querySelector(".file").textContent = fileName;
  if (answer.identified && answer.identified.track_id === song.track_id) item.classList.add("identified-song");
  const tags = item.querySelector(".tags");
  song.tags.forEach((t) => {
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = t;
    tags.append(tag);
  });
  item.querySelector(".combined").textContent = song.combined_score.toFixed(3);
  item.querySelector(".votes").textContent = song.votes;
  item.querySelector(".total").textContent = song.total_similarity.toFixed(3);
  item.querySelector(".score-bar").value = song.combined_score;
  if (song.match) showLandmark(item.querySelector(".landmark"), song, title);

  // Like `soundalike query`: per query clip, its best-matching clip of this song.
  const best = new Map();
  song.evidence.forEach((m) => {
    const seen = best.get(m.query_start_s);
    if (!seen || m.similarity > seen.similarity) best.set(m.query_start_s, m);
  });
  const matches = [...best.values()].sort((a, b) => a.query_start_s - b.query_start_s);
  const details = item.querySelector("details");
  details.hidden = !matches.length;  // found by its landmarks only: no clip of it matched
  details.open = open;
  details.querySelector("summary").textContent =
    `Matched clips (${matches.length} of ${song.evidence.length} matches)`;
  const body = details.querySelector("tbody");
  matches.forEach((m) => body.append(matchRow(song, m, answer.clip_s, file, fileName)));
  return item;
}

// The song's landmark match: where the excerpt lies in it, and whether that identifies it.
function showLandmark(line, song, title) {
  const m = song.match;
  line.hidden = false;
  line.classList.toggle("confident", m.confident);
  line.querySelector(".badge").textContent = m.confident ? "confident" : "not confident";
  showOffset(line, line.querySelector(".offset"), line.querySelector(".speed"), line.querySelector(".landmark-audio"),
    song.track_id, m, title);
}

function player(src, cls, label) {
  const audio = document.createElement("audio");
  audio.controls = true;
  audio.preload = "none";  // dozens of clips per page: fetch each only when played
  audio.className = cls;
  audio.src = src;
  audio.setAttribute("aria-label", label);
  return audio;
}

function matchRow(song, m, clipS, file, fileName) {
  const row = document.createElement("tr");
  row.className = "match";
  const queryCell = document.createElement("td");
  if (file) {
    // The input clip plays straight from the chosen file: a media fragment picks the span.
    queryCell.append(span(m.query_start_s, clipS), document.createElement("br"),
      player(`${state.fileUrl}#t=${m.query_start_s},${m.query_start_s + clipS}`, "query-audio",
        `your clip at ${clock(m.query_start_s)}`));
  } else {
    queryCell.textContent = "text";
  }
  const clipCell = document.createElement("td");
  const clipUrl = clipAudioUrl(song.track_id, m.clip_start_s);
  clipCell.append(span(m.clip_start_s, clipS), document.createElement("br"));
  if (state.info && state.info.clip_audio) {
    clipCell.append(player(clipUrl, "clip-audio", `${fileName} at ${clock(m.clip_start_s)}`));
  } else {
    clipCell.append("(catalogue audio not available here)");
  }
  const distance = document.createElement("td");
  distance.className = "distance";
  distance.textContent = m.distance.toFixed(3);
  const action = document.createElement("td");
  if (file && state.info && state.info.clip_audio) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "compare-button";
    button.textContent = "Compare";
    button.addEventListener("click", () => compareMatch(file, m.query_start_s, clipUrl, fileName, m.clip_start_s, clipS));
    action.append(button);
  }
  row.append(queryCell, clipCell, distance, action);
  return row;
}

// ------------------------------------------------------------------ compare

function setFile(input, file) {
  const transfer = new DataTransfer();
  transfer.items.add(file);
  input.files = transfer.files;
}

async function compareMatch(file, queryStart, clipUrl, fileName, clipStart, clipS) {
  showError($("compare-error"), "");
  $("compare-status").textContent = "Fetching the catalogue clip…";
  try {
    const response = await fetch(clipUrl);
    if (!response.ok) throw new Error(errorText(response.status, await response.json().catch(() => null)));
    const clip = new File([await response.blob()], `${fileName} @ ${clock(clipStart)}.wav`, { type: "audio/wav" });
    setFile($("compare-a"), file);
    setFile($("compare-b"), clip);
    $("compare-start-a").value = queryStart;
    $("compare-start-b").value = 0;
    $("compare-seconds").value = clipS;
    $("compare-section").scrollIntoView({ behavior: "smooth" });
    await compare();
  } catch (err) {
    $("compare-status").textContent = "";
    showError($("compare-error"), err.message);
  }
}

async function compare(event) {
  if (event) event.preventDefault();
  const a = $("compare-a").files[0];
  const b = $("compare-b").files[0];
  showError($("compare-error"), "");
  if (!a || !b) {
    showError($("compare-error"), "Choose two audio files, A and B.");
    return;
  }
  const form = new FormData();
  form.append("a", a, a.name);
  form.append("b", b, b.name);
  form.append("start_a_s", $("compare-start-a").value || "0");
  form.append("start_b_s", $("compare-start-b").value || "0");
  form.append("seconds", $("compare-seconds").value || "15");
  form.append("align", $("compare-align").checked ? "true" : "false");
  const run = progress($("compare-status"), [$("compare-button")]);
  run.phase("Comparing…");
  try {
    const result = await post("/api/compare", form, (f) => run.phase(f < 1 ? `Uploading ${Math.round(f * 100)} %…` : "Comparing…"));
    run.done("");
    const offset = result.offset_s ? `, B offset ${result.offset_s >= 0 ? "+" : ""}${result.offset_s.toFixed(2)} s` : "";
    $("compare-summary").textContent =
      `mean cosine ${result.mean_cosine.toFixed(3)} over ${result.frames} frames${offset}: ${a.name} vs ${b.name}`;
    $("compare-plot").src = `data:image/png;base64,${result.png_b64}`;
    $("compare-result").hidden = false;
  } catch (err) {
    run.done("");
    showError($("compare-error"), err.message);
  }
}

// ------------------------------------------------------------------ start

async function start() {
  try {
    const response = await fetch("/api/info");
    state.info = await response.json();
  } catch (err) {
    showError($("error"), "The server could not be reached.");
    return;
  }
  const info = state.info;
  $("model-info").textContent = `${info.backend} model ${info.model}` +
    (info.embedder ? ` · embedder ${info.embedder}` : "") + ` · uploads up to ${megabytes(info.max_upload_bytes)}`;
  $("max-results").value = info.defaults.max_results;
  $("compare-seconds").max = info.max_compare_seconds;
  $("text-form").hidden = info.text_search === false;

  const input = $("file-input");
  const zone = $("drop-zone");
  input.addEventListener("change", () => chooseFile(input.files[0]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    chooseFile(e.dataTransfer.files[0]);
  });
  $("search-form").addEventListener("submit", searchByFile);
  $("text-form").addEventListener("submit", searchByText);
  $("compare-form").addEventListener("submit", compare);
  document.body.dataset.ready = "true";
}

start();
