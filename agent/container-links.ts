/**
 * Container ids from the kubelet's `/var/log/containers` symlinks. The kubelet creates
 * `<pod>_<namespace>_<container>-<containerId>.log` → `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log`
 * right after it starts a container, about a second before the pod's status names that container
 * instance: the symlink ties each `<n>.log` to the id of the instance that writes it.
 *
 * Synchronous and cheap: the folder is listed only while some file's id is unknown, at most once per
 * `minRescanMs`, and only new names are read (`readlink`); the index holds the entries of the last
 * listing (bounded by `maxEntries`).
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../shared/logger.js';
import { describeError } from '../shared/errors.js';
import { instanceKeyOf, parseContainerLinkName, type PodLogPath } from './pod-path.js';

export const DEFAULT_CONTAINER_LINKS_RESCAN_MS = 200;
const DEFAULT_MAX_ENTRIES = 16_384;
const ERROR_LOG_INTERVAL_MS = 60_000;

export interface ContainerLinksOptions {
  /** The kubelet's symlink folder (`/var/log/containers`). */
  dir: string;
  minRescanMs?: number;
  maxEntries?: number;
  now?: () => number;
  logger?: Logger;
  /** For tests: the file system calls. */
  readdir?: (dir: string) => string[];
  readlink?: (path: string) => string;
}

interface LinkEntry {
  /** `<namespace>_<pod>_<uid>/<container>/<n>.log` of the target. */
  key: string;
  containerId: string;
}

export class ContainerLinkIndex {
  /** By link name: names never change their target, so a name is read once. */
  private byName = new Map<string, LinkEntry | null>();
  /** By instance key: the container id. */
  private byKey = new Map<string, string>();
  private lastScan = Number.NEGATIVE_INFINITY;
  private lastErrorLog = Number.NEGATIVE_INFINITY;
  private readonly now: () => number;
  private readonly minRescanMs: number;
  private readonly maxEntries: number;
  private readonly readdir: (dir: string) => string[];
  private readonly readlink: (path: string) => string;
  /** Listings done (for tests and metrics). */
  scans = 0;

  constructor(private readonly options: ContainerLinksOptions) {
    this.now = options.now ?? Date.now;
    this.minRescanMs = Math.max(0, options.minRescanMs ?? DEFAULT_CONTAINER_LINKS_RESCAN_MS);
    this.maxEntries = Math.max(1, options.maxEntries ?? DEFAULT_MAX_ENTRIES);
    this.readdir = options.readdir ?? ((dir) => readdirSync(dir));
    this.readlink = options.readlink ?? ((path) => readlinkSync(path));
  }

  /**
   * The id (without runtime prefix) of the container instance writing `path`, or undefined while no
   * symlink names it. Lists the folder again when the id is unknown and the last listing is older than
   * `minRescanMs`.
   */
  containerIdFor(path: PodLogPath): string | undefined {
    const key = `${path.namespace}_${path.pod}_${path.podUid}/${path.container}/${path.restartCount}.log`;
    const known = this.byKey.get(key);
    if (known !== undefined) return known;
    const now = this.now();
    if (now - this.lastScan < this.minRescanMs) return undefined;
    this.lastScan = now;
    this.rescan();
    return this.byKey.get(key);
  }

  private rescan(): void {
    let names: string[];
    try {
      names = this.readdir(this.options.dir);
    } catch (error) {
      this.logError(error, 'cannot list the container symlink folder: container ids wait for the pod status');
      return;
    }
    this.scans++;
    const byName = new Map<string, LinkEntry | null>();
    const byKey = new Map<string, string>();
    for (const name of names) {
      if (byName.size >= this.maxEntries) break;
      let entry = this.byName.get(name);
      if (entry === undefined) entry = this.readEntry(name);
      byName.set(name, entry);
      if (entry !== null) byKey.set(entry.key, entry.containerId);
    }
    this.byName = byName;
    this.byKey = byKey;
  }

  /** null: not a kubelet symlink (or unreadable): not read again while the name stays. */
  private readEntry(name: string): LinkEntry | null {
    const link = parseContainerLinkName(name);
    if (link === undefined) return null;
    let target: string;
    try {
      target = this.readlink(join(this.options.dir, name));
    } catch (error) {
      // Gone between the listing and the read (container removed), or not a symlink.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' && (error as NodeJS.ErrnoException).code !== 'EINVAL') {
        this.logError(error, 'cannot read a container symlink');
      }
      return null;
    }
    const key = instanceKeyOf(target);
    if (key === undefined) return null;
    // The target's folder must be the same pod and container as the link's name.
    const [directory, container] = key.split('/');
    if (container !== link.container || !directory?.startsWith(`${link.namespace}_${link.pod}_`)) return null;
    return { key, containerId: link.containerId };
  }

  private logError(error: unknown, message: string): void {
    const now = this.now();
    if (now - this.lastErrorLog < ERROR_LOG_INTERVAL_MS) return;
    this.lastErrorLog = now;
    this.options.logger?.warn({ dir: this.options.dir, err: describeError(error) }, message);
  }
}
