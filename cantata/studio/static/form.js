// The compose form: its state as a plain object (saved in localStorage and in presets), the
// audioInference task it makes, and the server's errors shown next to the fields they name.

const STATE_KEY = 'cantata.studio.form';
const PRESETS_KEY = 'cantata.studio.presets';
const FIELDS = ['model', 'positivePrompt', 'lyrics', 'instrumental', 'duration', 'bpm', 'keyScale', 'timeSignature',
  'vocalLanguage', 'steps', 'guidanceType', 'CFGScale', 'cfgIntervalStart', 'cfgIntervalEnd', 'numberResults',
  'outputFormat', 'bitrate', 'negativePrompt', 'seed', 'seedLock',
  // audio to audio: the source (its id for the server, its URL and length for the waveform)
  'sourceAudio', 'sourceURL', 'sourceDuration', 'sourceName', 'sourceMode', 'repaintingStart', 'repaintingEnd',
  'outpaintSide', 'outpaintSeconds', 'strength', 'coverConditioningScale', 'trackName', 'trackClasses',
  'referenceAudio', 'referenceName'];
// What "Reuse settings" carries over from a take: how it was made, not the audio it was made from.
const SOURCE_FIELDS = new Set(FIELDS.slice(FIELDS.indexOf('sourceAudio')));
const MAX_SEED = 2 ** 53 - 1;  // what a JS number holds exactly; the server accepts up to 2^63-1

const $ = (id) => document.getElementById(id);

export function readForm() {
  const state = {};
  for (const name of FIELDS) {
    const el = $(name);
    if (el.type === 'checkbox') state[name] = el.checked;
    else if (el.multiple) state[name] = [...el.selectedOptions].map((o) => o.value);
    else state[name] = el.value;
  }
  return state;
}

export function writeForm(state) {
  for (const name of FIELDS) {
    if (!(name in state)) continue;
    const el = $(name);
    if (el.type === 'checkbox') el.checked = Boolean(state[name]);
    else if (el.multiple) for (const o of el.options) o.selected = [state[name]].flat().includes(o.value);
    else el.value = state[name];
  }
  $('lyrics').disabled = $('instrumental').checked;
  document.dispatchEvent(new CustomEvent('form-written'));
}

export function saveForm() { localStorage.setItem(STATE_KEY, JSON.stringify(readForm())); }
export function savedForm() {
  try { return JSON.parse(localStorage.getItem(STATE_KEY) || '{}'); } catch { return {}; }  // corrupt: defaults
}
export function restoreForm() { writeForm(savedForm()); }

export function randomSeed() { return Math.floor(Math.random() * MAX_SEED); }

// Numbers the user left empty are not sent: the server's own defaults (per model) apply.
const number = (v) => (v === '' || v === undefined ? undefined : Number(v));

export function buildTask(state) {
  const settings = {
    lyrics: state.instrumental || !state.lyrics.trim() ? undefined : state.lyrics,
    bpm: number(state.bpm), keyScale: state.keyScale || undefined, timeSignature: number(state.timeSignature),
    vocalLanguage: state.instrumental ? 'unknown' : (state.vocalLanguage || undefined),
    guidanceType: state.guidanceType || undefined,
    cfgIntervalStart: number(state.cfgIntervalStart), cfgIntervalEnd: number(state.cfgIntervalEnd),
  };
  const task = {
    taskType: 'audioInference', deliveryMethod: 'async', outputType: 'URL',
    model: state.model, positivePrompt: state.positivePrompt,
    negativePrompt: state.negativePrompt || undefined,
    steps: number(state.steps), CFGScale: number(state.CFGScale), seed: number(state.seed),
    numberResults: number(state.numberResults), outputFormat: state.outputFormat,
  };
  if (state.bitrate !== '' && ['MP3', 'OGG'].includes(state.outputFormat)) task.audioSettings = {bitrate: number(state.bitrate)};
  const inputs = {};
  if (state.referenceAudio) inputs.referenceAudios = [state.referenceAudio];
  if (state.sourceAudio) {
    inputs.audio = state.sourceAudio;
    Object.assign(settings, sourceSettings(state));
    if (state.sourceMode === 'cover') task.strength = number(state.strength);
  } else {
    task.duration = number(state.duration);
  }
  if (Object.keys(inputs).length) task.inputs = inputs;
  task.settings = prune(settings);
  return prune(task);
}

// The settings one audio-to-audio mode sends. Outpainting is a repaint region outside the
// source: negative start prepends, an end past the source's length appends.
function sourceSettings(state) {
  const region = {repaintingStart: number(state.repaintingStart), repaintingEnd: number(state.repaintingEnd)};
  const seconds = number(state.outpaintSeconds);
  const length = number(state.sourceDuration);
  switch (state.sourceMode) {
    case 'outpaint':
      return state.outpaintSide === 'before'
        ? {repaintingStart: seconds === undefined ? undefined : -seconds, repaintingEnd: 0}
        : {repaintingStart: length, repaintingEnd: seconds === undefined || length === undefined ? undefined : round(length + seconds)};
    case 'cover': return {coverConditioningScale: number(state.coverConditioningScale)};
    case 'extract': return {task: 'extract', trackName: state.trackName || undefined};
    case 'lego': return {task: 'lego', trackName: state.trackName || undefined, ...region};
    case 'complete': return {task: 'complete', trackClasses: state.trackClasses.length ? state.trackClasses : undefined};
    default: return region;  // repaint
  }
}

const round = (v) => Math.round(v * 100) / 100;

function prune(obj) {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined));
}

// Leave out what this model does not take (e.g. CFGScale on a turbo model), as its JSON Schema
// from the server says, instead of letting the server refuse the whole task for it.
export function fitTask(task, schema) {
  if (!schema?.properties) return task;
  const top = schema.properties;
  const inSettings = top.settings?.properties || {};
  const fitted = Object.fromEntries(Object.entries(task).filter(([k]) => k in top));
  if (fitted.settings) fitted.settings = Object.fromEntries(Object.entries(fitted.settings).filter(([k]) => k in inSettings));
  return fitted;
}

// The form state a stored request describes (for "reuse settings" and history); the source
// fields are left as they are.
export function stateFromRequest(request, seed) {
  const s = request.settings || {};
  const blank = (v) => (v === undefined || v === null ? '' : String(v));
  const state = {
    model: blank(request.model), positivePrompt: blank(request.positivePrompt), lyrics: blank(s.lyrics),
    instrumental: !s.lyrics, duration: blank(request.duration), bpm: blank(s.bpm), keyScale: blank(s.keyScale),
    timeSignature: blank(s.timeSignature), vocalLanguage: s.vocalLanguage === 'unknown' ? '' : blank(s.vocalLanguage),
    steps: blank(request.steps), guidanceType: blank(s.guidanceType), CFGScale: blank(request.CFGScale),
    cfgIntervalStart: blank(s.cfgIntervalStart), cfgIntervalEnd: blank(s.cfgIntervalEnd),
    numberResults: blank(request.numberResults || 1), outputFormat: (request.outputFormat || 'MP3').toUpperCase(),
    bitrate: blank(request.audioSettings?.bitrate), negativePrompt: blank(request.negativePrompt),
    seed: blank(seed ?? request.seed), seedLock: true,
  };
  if (!request.duration) delete state.duration;  // an audio-to-audio take: its source set the length
  return Object.fromEntries(Object.entries(state).filter(([k]) => !SOURCE_FIELDS.has(k)));
}

// -- errors next to fields ----------------------------------------------------------------------

export function clearErrors() {
  for (const el of document.querySelectorAll('.field-error')) el.remove();
  for (const el of document.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  $('form-error').textContent = '';
}

const shown = (el) => !el.closest('[hidden]');

// Show a Runware error next to each field its `parameter` names (a string or a list): the first
// visible control whose data-param lists that path (outpainting's seconds stand for the repaint
// region). One that names no field of the form goes under the form.
export function showError(error) {
  const params = [error.parameter].flat().filter(Boolean);
  const fields = params.map((p) => [...document.querySelectorAll(`[data-param~="${CSS.escape(p)}"]`)].find(shown))
    .filter((f, i, all) => f && all.indexOf(f) === i);
  if (!fields.length) { $('form-error').textContent = error.message; return; }
  fields.forEach((field) => noteAt(field, error));
  fields[0].focus?.();
}

// The error's message under one control, tied to it for screen readers.
export function noteAt(field, error) {
  const target = field.type === 'hidden' ? $('source-name') : field;
  const note = document.createElement('p');
  note.className = 'error field-error';
  note.id = `${field.id}-error`;
  note.setAttribute('role', 'alert');
  note.dataset.code = error.code;
  note.textContent = error.message;
  target.setAttribute('aria-invalid', 'true');
  target.setAttribute('aria-describedby', note.id);
  target.closest('.field, fieldset').append(note);
  $('advanced').open ||= Boolean(field.closest('#advanced'));
}

// -- presets ------------------------------------------------------------------------------------

export function presets() {
  try { return JSON.parse(localStorage.getItem(PRESETS_KEY) || '{}'); } catch { return {}; }
}

export function savePresets(all) {
  localStorage.setItem(PRESETS_KEY, JSON.stringify(all));
  const list = $('preset-list');
  list.replaceChildren(...Object.keys(all).sort().map((name) => new Option(name, name)));
}
