// Audio to audio: the source track (a picked or dropped file, uploaded with mediaStorage, or an
// earlier take), its waveform with the region to repaint selected by mouse or keyboard, what to
// do with it (repaint, outpaint, cover, and extract/lego/complete where the model has them), and
// a timbre reference. Which modes and stems a model offers comes from its JSON Schema on the
// server (/v1/models/{model}/schema.json), never from a list kept here.

import {clearErrors, noteAt, readForm, saveForm, savedForm, writeForm} from './form.js';
import {clock, Wave} from './waveform.js';

const $ = (id) => document.getElementById(id);
const tenth = (v) => (Math.round(v * 10) / 10).toFixed(1);

let rpc;  // () => the connected RunwareClient
let wave = null;
let waveURL = '';

export function initSource(getClient) {
  rpc = getClient;
  $('source-file').addEventListener('change', () => pickSource($('source-file').files[0]));
  $('reference-file').addEventListener('change', () => pickReference($('reference-file').files[0]));
  const drop = $('source-drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('dragging'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('dragging'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('dragging');
    pickSource(e.dataTransfer.files[0]);
  });
  $('source-clear').onclick = () => {
    writeForm({sourceAudio: '', sourceURL: '', sourceDuration: '', sourceName: '', repaintingStart: '', repaintingEnd: ''});
    $('source-file').value = '';
    saveForm();
  };
  $('reference-clear').onclick = () => {
    writeForm({referenceAudio: '', referenceName: ''});
    $('reference-file').value = '';
    saveForm();
  };
  $('source-play').onclick = () => wave?.playPause();
  $('source-loop').onchange = () => { if (wave) wave.loop = $('source-loop').checked; };
  $('sourceMode').addEventListener('change', showSource);
  for (const id of ['repaintingStart', 'repaintingEnd']) {
    $(id).addEventListener('input', () => wave?.select(Number($('repaintingStart').value), Number($('repaintingEnd').value)));
  }
  document.addEventListener('form-written', showSource);
}

// A source from anywhere: its id for the server, a URL for the waveform, its length, a name.
// The region starts on the second quarter, ready to be dragged where it should be.
export function setSource({audio, url, duration, name, mode, region}) {
  const [start, end] = region || (duration ? [duration / 4, duration / 2] : ['', '']);
  writeForm({sourceAudio: audio, sourceURL: url || '', sourceDuration: duration ? String(Math.floor(duration * 10) / 10) : '',
    sourceName: name || audio, sourceMode: mode || $('sourceMode').value || 'repaint',
    repaintingStart: start === '' ? '' : tenth(start), repaintingEnd: end === '' ? '' : tenth(end)});
  saveForm();
  $('source-panel').scrollIntoView({block: 'nearest'});
  $('sourceMode').focus();
}

// The model's audio-to-audio offer, from its JSON Schema: the extra tasks (settings.task) and
// their stems. Options it lacks are hidden; a mode it lacks falls back to repaint.
export function applySchema(schema) {
  const settings = schema?.properties?.settings?.properties || {};
  const tasks = settings.task?.enum || [];
  for (const option of $('sourceMode').options) {
    if (!option.dataset.task) continue;
    option.hidden = option.disabled = !tasks.includes(option.value);
  }
  const stems = settings.trackName?.enum || [];
  const classes = settings.trackClasses?.items?.enum || [];
  $('trackName').replaceChildren(new Option('choose a stem', ''), ...stems.map((s) => new Option(s, s)));
  $('trackClasses').replaceChildren(...classes.map((s) => new Option(s, s)));
  const saved = savedForm();
  const mode = $('sourceMode').selectedOptions[0]?.disabled ? 'repaint' : $('sourceMode').value;
  writeForm({sourceMode: mode, trackName: saved.trackName || '', trackClasses: saved.trackClasses || []});
  saveForm();
}

// Panel, mode sections and waveform follow the form state (called whenever it is written).
function showSource() {
  const state = readForm();
  const source = state.sourceAudio;
  $('source-panel').hidden = !source;
  $('source-name').textContent = source ? `Source: ${state.sourceName || source}` : '';
  $('duration').disabled = Boolean(source);
  for (const section of document.querySelectorAll('[data-modes]')) {
    section.hidden = !section.dataset.modes.split(' ').includes(state.sourceMode);
  }
  $('reference-name').textContent = state.referenceAudio ? `Reference: ${state.referenceName || state.referenceAudio}` : '';
  $('reference-clear').hidden = !state.referenceAudio;
  showWave(source ? state.sourceURL : '');
}

function showWave(url) {
  if (url === waveURL) {
    wave?.select(Number($('repaintingStart').value), Number($('repaintingEnd').value));
    return;
  }
  wave?.destroy();
  wave = null;
  waveURL = url;
  $('source-time').textContent = '';
  if (!url) return;
  wave = new Wave($('source-wave'), {url, label: 'Source waveform: drag to select the region', onSelect: selected});
  wave.loop = $('source-loop').checked;
  wave.on('timeupdate', (t) => { $('source-time').textContent = `${clock(t)} / ${clock(wave.duration)}`; });
  wave.on('play', () => { $('source-play').textContent = 'Pause'; });
  wave.on('pause', () => { $('source-play').textContent = 'Play'; });
  wave.ready.then(() => {
    $('source-time').textContent = `${clock(0)} / ${clock(wave.duration)}`;
    if (!$('sourceDuration').value) writeForm({sourceDuration: String(Math.floor(wave.duration * 10) / 10)});
    wave.select(Number($('repaintingStart').value), Number($('repaintingEnd').value));
    $('source-wave').dataset.ready = 'true';
  }, () => { $('source-time').textContent = 'this audio cannot be drawn here'; });
}

// A region dragged on the waveform is the repaint region (seconds, to a tenth).
function selected(region) {
  writeForm(region ? {repaintingStart: tenth(region.start), repaintingEnd: tenth(region.end)}
    : {repaintingStart: '', repaintingEnd: ''});
  saveForm();
}

// -- files: read, upload with mediaStorage, measure --------------------------------------------------

async function pickSource(file) {
  if (!file) return;
  const media = await upload(file, 'source-file');
  if (!media) return;
  setSource({audio: media.mediaUUID, url: media.mediaURL, duration: await measure(file), name: file.name});
}

async function pickReference(file) {
  if (!file) return;
  const media = await upload(file, 'reference-file');
  if (!media) return;
  writeForm({referenceAudio: media.mediaUUID, referenceName: file.name});
  saveForm();
}

// The file as a data URI through Runware's mediaStorage task; its errors go next to the picker.
async function upload(file, pickerId) {
  clearErrors();
  const data = await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
  $(pickerId).setAttribute('aria-busy', 'true');
  const reply = await rpc().send({taskType: 'mediaStorage', operation: 'upload', media: data});
  $(pickerId).removeAttribute('aria-busy');
  if (reply.errors.length) {
    noteAt($(pickerId), reply.errors[0]);  // whatever failed, the cause is this file
    return null;
  }
  return reply.data[0];
}

function measure(file) {
  return new Promise((resolve) => {
    const probe = new Audio(URL.createObjectURL(file));
    probe.onloadedmetadata = () => resolve(probe.duration);
    probe.onerror = () => resolve(0);
  });
}
