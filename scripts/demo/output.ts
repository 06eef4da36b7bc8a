/** The demo's terminal output: plain lines, and one progress line that updates in place on a terminal. */

/** A plain (non-TTY) progress line is printed every PRINT_INTERVAL_MS. */
const PRINT_INTERVAL_MS = 2_000;
export const SECOND_MS = 1_000;

class Output {
  private readonly tty = process.stdout.isTTY;
  private progressShown = false;
  private lastPlainMs = 0;

  line(text = ''): void {
    this.clearProgress();
    process.stdout.write(`${text}\n`);
  }

  /** One updating line on a terminal; a plain line every PRINT_INTERVAL_MS otherwise (or when `force`). */
  progress(text: string, force = false): void {
    if (this.tty) {
      process.stdout.write(`\r\x1b[2K${text}`);
      this.progressShown = true;
      if (force) this.clearProgress(true);
    } else if (force || Date.now() - this.lastPlainMs >= PRINT_INTERVAL_MS) {
      this.lastPlainMs = Date.now();
      process.stdout.write(`${text}\n`);
    }
  }

  private clearProgress(keep = false): void {
    if (!this.progressShown) return;
    process.stdout.write(keep ? '\n' : '\r\x1b[2K');
    this.progressShown = false;
  }
}

export const out = new Output();

export function elapsed(startMs: number): string {
  return `${((Date.now() - startMs) / SECOND_MS).toFixed(1)}s`;
}
