// A waveform with one selectable region, on wavesurfer.js and its regions plugin (vendored, see
// vendor/wavesurfer/README.md): drag on it to select, click to seek, loop the selection. The
// same control is the player of every take and the source picker of audio to audio.
//
// Keyboard (the waveform is a focusable slider): Space plays/pauses, arrows seek 1 s (Shift: 5 s),
// Home/End jump, [ and ] set the selection's start and end at the cursor, Escape clears it.

import WaveSurfer from './vendor/wavesurfer/wavesurfer.esm.js';
import RegionsPlugin from './vendor/wavesurfer/regions.esm.js';

const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
const colors = () => ({waveColor: cssVar('--wave'), progressColor: cssVar('--accent'), cursorColor: cssVar('--text')});
const darkScheme = matchMedia('(prefers-color-scheme: dark)');

export const clock = (seconds) => {
  const s = Math.max(0, seconds || 0);
  return `${Math.floor(s / 60)}:${(s % 60).toFixed(1).padStart(4, '0')}`;
};

export class Wave {
  // container: an empty element; url: the audio; media: an <audio> to play through (optional);
  // onSelect(region | null) hears every change of the selection made on the waveform.
  constructor(container, {url, media, label, onSelect = () => {}}) {
    this.container = container;
    this.onSelect = onSelect;
    this.loop = false;
    this.regions = RegionsPlugin.create();
    this.surfer = WaveSurfer.create({container, url, media, height: 72, normalize: true, cursorWidth: 2,
      barWidth: 2, barGap: 1, barRadius: 1, plugins: [this.regions], ...colors()});
    this.ready = new Promise((resolve, reject) => {
      this.surfer.once('ready', resolve);
      this.surfer.once('error', reject);
    });
    this.ready.catch(() => { container.dataset.failed = 'true'; });
    this.regions.enableDragSelection({color: cssVar('--region')});
    this.regions.on('region-created', (region) => {
      for (const other of this.regions.getRegions()) if (other !== region) other.remove();
      if (!this.quiet) this.onSelect(region);
    });
    this.regions.on('region-updated', (region) => this.onSelect(region));
    this.regions.on('region-out', (region) => {
      if (this.loop && region === this.region && this.surfer.isPlaying()) region.play();
    });
    this.restyle = () => this.surfer.setOptions(colors());
    darkScheme.addEventListener('change', this.restyle);
    this.accessible(label);
  }

  get region() { return this.regions.getRegions()[0] || null; }
  get duration() { return this.surfer.getDuration(); }
  get playing() { return this.surfer.isPlaying(); }

  // Set the selection from numbers (fields typed by hand); no onSelect echo.
  select(start, end) {
    const length = this.duration;
    if (!length || !(end > start)) { this.regions.clearRegions(); return; }
    const [s, e] = [Math.max(0, start), Math.min(length, end)];
    if (this.region) { this.region.setOptions({start: s, end: e}); return; }
    this.quiet = true;
    try { this.regions.addRegion({start: s, end: e, color: cssVar('--region')}); } finally { this.quiet = false; }
  }

  clear() {
    this.regions.clearRegions();
    this.onSelect(null);
  }

  // With looping on and a selection, play starts at the selection and goes round it.
  playPause() {
    const region = this.region;
    if (!this.playing && this.loop && region) {
      const t = this.surfer.getCurrentTime();
      if (t < region.start || t >= region.end) { region.play(); return; }
    }
    this.surfer.playPause();
  }

  pause() { this.surfer.pause(); }
  time() { return this.surfer.getCurrentTime(); }
  seek(seconds) { this.surfer.setTime(Math.min(Math.max(0, seconds), this.duration || 0)); }
  play() { return this.surfer.play(); }
  on(event, handler) { return this.surfer.on(event, handler); }

  destroy() {
    darkScheme.removeEventListener('change', this.restyle);
    this.surfer.destroy();
  }

  accessible(label) {
    const el = this.container;
    el.tabIndex = 0;
    el.setAttribute('role', 'slider');
    el.setAttribute('aria-label', `${label}. Space plays, arrows seek, [ and ] set the selection, Escape clears it`);
    el.setAttribute('aria-valuemin', '0');
    const update = () => {
      el.setAttribute('aria-valuemax', String(Math.round(this.duration * 10) / 10));
      el.setAttribute('aria-valuenow', String(Math.round(this.time() * 10) / 10));
      el.setAttribute('aria-valuetext', `${clock(this.time())} of ${clock(this.duration)}`);
    };
    this.surfer.on('ready', update);
    this.surfer.on('timeupdate', update);
    el.addEventListener('keydown', (e) => {
      const step = e.shiftKey ? 5 : 1;
      const at = this.time();
      const region = this.region;
      const keys = {
        ' ': () => this.playPause(), Enter: () => this.playPause(),
        ArrowLeft: () => this.seek(at - step), ArrowRight: () => this.seek(at + step),
        Home: () => this.seek(0), End: () => this.seek(this.duration),
        '[': () => this.selectByKey(at, region ? Math.max(region.end, at + 0.1) : this.duration),
        ']': () => this.selectByKey(region ? Math.min(region.start, at - 0.1) : 0, at),
        Escape: () => this.clear(),
      };
      if (!keys[e.key]) return;
      e.preventDefault();
      keys[e.key]();
    });
  }

  selectByKey(start, end) {
    this.select(start, end);
    this.onSelect(this.region);
  }
}
