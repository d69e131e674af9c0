// Following a job's stdout or stderr: each poll asks for the bytes after those it
// has (?offset=N), the answer's X-Log-Size says how long the log is now.

import { api, download, jobPath } from "./api.js";
import { el } from "./dom.js";
import { bytes } from "./format.js";

const TAIL_BYTES = 1 << 20; // shown at most from the end of a long log at first
const KEEP_CHARS = 4 << 20; // the page keeps at most this much of a log

export class LogFollower {
  constructor(jobId, name, report) {
    this.path = `${jobPath(jobId)}/log/${name}`;
    this.name = name;
    this.jobId = jobId;
    this.offset = null;
    this.decoder = new TextDecoder();
    this.text = document.createTextNode("");
    this.pre = el("pre", { class: "log", id: `log-${name}` }, this.text);
    this.note = el("p", { class: "muted", id: `log-${name}-note` }, "(nothing yet)");
    const save = el("button", { type: "button", id: `log-${name}-download` }, `Download ${name}`);
    save.addEventListener("click", () => {
      download(this.path, `${jobId}-${name}.txt`).catch(report);
    });
    this.node = el("section", { class: "log-pane" }, el("h4", {}, name, " ", save),
      this.note, this.pre);
  }

  async poll() {
    if (this.offset === null) {
      // Start near the end of a long log: its size first, from a HEAD request.
      const head = await api(this.path, { method: "HEAD" });
      const size = Number(head.headers.get("X-Log-Size") ?? 0);
      this.offset = Math.max(0, size - TAIL_BYTES);
      this.skipped = this.offset;
    }
    const response = await api(`${this.path}?offset=${this.offset}`);
    const size = Number(response.headers.get("X-Log-Size") ?? 0);
    const chunk = new Uint8Array(await response.arrayBuffer());
    if (size < this.offset) { // a new attempt started the log again
      this.offset = 0;
      this.skipped = 0;
      this.decoder = new TextDecoder();
      this.text.data = "";
      return this.poll();
    }
    this.offset += chunk.byteLength;
    if (chunk.byteLength) this.append(this.decoder.decode(chunk, { stream: true }));
    this.note.textContent = size === 0 ? "(nothing yet)"
      : `${bytes(size)}` + (this.skipped ? `; the first ${bytes(this.skipped)} are not shown ` +
        "(download the whole log)" : "");
    return chunk.byteLength;
  }

  append(text) {
    const atBottom = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 4;
    this.text.appendData(text);
    if (this.text.length > KEEP_CHARS) {
      const cut = this.text.length - KEEP_CHARS;
      this.text.deleteData(0, cut);
      this.skipped = (this.skipped ?? 0) + cut;
    }
    if (atBottom) this.pre.scrollTop = this.pre.scrollHeight;
  }
}
