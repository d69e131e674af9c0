// How times, durations and sizes read on the page.

// The API's times are ISO 8601 in UTC; one without an offset is UTC too.
export function parseTime(iso) {
  if (!iso) return null;
  const zoned = /([zZ]|[+-]\d\d:?\d\d)$/.test(iso) ? iso : iso + "Z";
  // Milliseconds, cut (not rounded) as the API's microseconds would read: 59.9999 is 59.
  const time = new Date(zoned.replace(/(\.\d{3})\d+/, "$1"));
  return Number.isNaN(time.getTime()) ? null : time;
}

const LOCAL = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "2-digit", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
});

export function localTime(iso) {
  const time = parseTime(iso);
  return time ? LOCAL.format(time) : "";
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const pad = (n) => String(n).padStart(2, "0");
  if (s < 3600) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${pad(Math.floor(s / 60) % 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor(s / 3600) % 24} h`;
}

export function bytes(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

// How long the job ran (or has run so far): the worker's measure when there is one.
export function runtime(job, now = Date.now()) {
  const wall = job.accounting?.wall_seconds;
  if (typeof wall === "number") return wall;
  const started = parseTime(job.started_at);
  if (!started) return null;
  const end = parseTime(job.finished_at) ?? (job.state === "running" ? new Date(now) : null);
  return end ? (end - started) / 1000 : null;
}

// "peak of limit" when the worker measured the peak, else the limit alone.
export function memory(job) {
  const limit = typeof job.memory === "number" ? bytes(job.memory * 1024 * 1024) : "";
  const peak = job.accounting?.peak_memory;
  if (typeof peak === "number") return limit ? `${bytes(peak)} of ${limit}` : bytes(peak);
  return limit ? `limit ${limit}` : "";
}

// Why the job is where it is, in a few words.
export function reason(job) {
  if (job.state === "queued") {
    const place = typeof job.queue_position === "number" ? `#${job.queue_position} in queue` : "";
    return [place, job.pending_reason].filter(Boolean).join(": ");
  }
  if (job.state === "running") {
    return job.cancel_requested ? "cancelling" : job.worker ? `on ${job.worker}` : "";
  }
  // The worker's message names the exit status or the limit when there is one.
  const parts = [];
  if (job.message) parts.push(job.message);
  else if (job.limit) parts.push(`${job.limit} limit reached`);
  else if (job.exit_code !== null && job.exit_code !== undefined) {
    parts.push(`exit code ${job.exit_code}`);
  }
  const signal = job.accounting?.signal;
  if (typeof signal === "number") parts.push(`signal ${signal}`);
  return parts.join(", ");
}

export function arrayLabel(array) {
  if (!array || typeof array !== "object") return "";
  return `${array.id}[${array.index}] of ${array.size}`;
}
