/**
 * Kubernetes metadata for the lines of this node's pods: one list+watch of the pods bound to this node
 * (field selector `spec.nodeName`) and one of the namespaces (for their labels), kept in a cache that
 * answers per line in O(1) without allocating.
 *
 * The API server is never on the shipping path: until the first list, while the API is unreachable,
 * or for a pod the cache does not know, {@link PodMetadataStore.lookup} answers with what the log path
 * tells (a `fallback`). Deleted pods stay in the cache for a grace period so that the last lines of a
 * pod still get its metadata, then they are evicted.
 *
 * Watch protocol, per resource: list (resourceVersion "0": served from the API server's watch cache,
 * cheap) → watch from the list's resourceVersion with bookmarks, tracking the newest resourceVersion →
 * when the server ends the watch, resume from that resourceVersion; on 410 Gone ("too old resource
 * version") relist at once with a consistent read; on any other failure wait a jittered, capped
 * backoff and relist.
 */
import type { V1Namespace, V1Pod } from '@kubernetes/client-node';
import { describeError, ErrorCode, LogshipError } from '../shared/errors.js';
import type { KubeClients } from '../shared/kube.js';
import { RateLimitedLog, type Logger } from '../shared/logger.js';
import { KubernetesField, type KubernetesMetadata } from '../shared/record.js';
import { abortableSleep, backoffDelayMs, type BackoffOptions } from '../shared/retry.js';
import type { ContainerLinkIndex } from './container-links.js';
import type { PodLogPath } from './pod-path.js';

/** `"true"` on a pod: none of its lines are shipped. */
export const ANNOTATION_EXCLUDE = 'logship.io/exclude';
/** `"a,b"` on a pod: the lines of containers `a` and `b` are not shipped. */
export const ANNOTATION_EXCLUDE_CONTAINERS = 'logship.io/exclude-containers';
/** Multiline mode for a pod's lines (e.g. `java`), read by the parser through {@link PodMetadataStore.annotation}. */
export const ANNOTATION_MULTILINE = 'logship.io/multiline';

/**
 * Annotations never copied into records: `kubectl apply` stores the whole manifest in this one, often
 * kilobytes, which would otherwise ride along on every line.
 */
export const OMITTED_ANNOTATIONS: ReadonlySet<string> = new Set(['kubectl.kubernetes.io/last-applied-configuration']);

export const DEFAULT_DELETED_POD_GRACE_MS = 5 * 60_000;
export const DEFAULT_MAX_CACHED_PODS = 4096;
export const DEFAULT_WATCH_BACKOFF: Readonly<BackoffOptions> = { initialDelayMs: 500, maxDelayMs: 30_000 };

/** How long a list request may take before it is abandoned and retried. */
const LIST_TIMEOUT_MS = 60_000;
/** Server-side watch duration, randomised per watch so that many agents do not reconnect together. */
const WATCH_TIMEOUT_MIN_S = 300;
const WATCH_TIMEOUT_SPREAD_S = 300;
/** A watch still open this long after its server-side timeout is presumed dead (half-open connection) and aborted. */
const WATCH_STALL_MARGIN_MS = 60_000;
/** A watch the server closes sooner than this without a single event is treated as a failure (no hot reconnect loop). */
export const MIN_CLEAN_WATCH_MS = 1000;
/** Bounds of the per-pod memo of metadata per container, and of the memo of fallbacks (pods the cache does not know). */
const MAX_CONTAINERS_PER_POD = 64;
/** Container instances (restart counts) whose id a pod entry remembers per container, newest first. */
const MAX_INSTANCES_PER_CONTAINER = 8;
const MAX_FALLBACK_PODS = 1024;

export type WatchedResource = 'pods' | 'namespaces';
export type WatchRestartReason = 'gone' | 'error';

export interface PodMetadataOptions {
  nodeName: string;
  cluster: string;
  deletedPodGraceMs: number;
  /** Called for metrics: API reachable or not, watch restarts by reason ('gone' | 'error'). */
  onWatchRestart?: (resource: WatchedResource, reason: WatchRestartReason) => void;
  logger: Logger;
  now?: () => number;
  backoff?: { initialDelayMs: number; maxDelayMs: number };
  /** Upper bound of cached pods; beyond it the oldest deleted pods are evicted before their grace period ends. */
  maxCachedPods?: number;
  /** The kubelet's `/var/log/containers` symlinks: container ids before the pod's status has them. */
  containerLinks?: ContainerLinkIndex;
}

export interface MetadataHit {
  kind: 'hit';
  metadata: KubernetesMetadata;
  /** Pod annotation `logship.io/exclude: "true"`, or the container listed in `logship.io/exclude-containers`. */
  excluded: boolean;
}

export interface MetadataFallback {
  kind: 'fallback';
  /** From the path only (namespace, pod, pod_uid, container) plus cluster and node; empty label maps. */
  metadata: KubernetesMetadata;
}

export type MetadataLookup = MetadataHit | MetadataFallback;

// ---------------------------------------------------------------------------------------------------
// Watch restart decision (pure)

/** How one list+watch round ended. */
export type WatchEnd =
  /** The server closed the stream without an error (its timeout, a restart of the API server…). */
  | { kind: 'closed'; events: number; durationMs: number }
  /** The server sent an ERROR event; `status` is its object (a metav1.Status). */
  | { kind: 'status'; status: unknown }
  /** The list or the watch request failed, or the stream broke. */
  | { kind: 'failed'; error: unknown };

export type WatchRestart =
  /** Watch again from the newest resourceVersion seen, at once. */
  | { action: 'resume' }
  /** The resourceVersion is gone from the server's history: relist at once. */
  | { action: 'relist'; reason: 'gone' }
  /** Wait a jittered backoff, then relist. */
  | { action: 'backoff'; reason: 'error' };

/** What to do after a watch ended. */
export function decideWatchRestart(end: WatchEnd): WatchRestart {
  switch (end.kind) {
    case 'closed':
      return end.events > 0 || end.durationMs >= MIN_CLEAN_WATCH_MS ? { action: 'resume' } : { action: 'backoff', reason: 'error' };
    case 'status':
      return isResourceExpired(end.status) ? { action: 'relist', reason: 'gone' } : { action: 'backoff', reason: 'error' };
    case 'failed':
      return isResourceExpired(end.error) ? { action: 'relist', reason: 'gone' } : { action: 'backoff', reason: 'error' };
  }
}

/**
 * Whether a Status object, an API error or an HTTP error says "410 Gone" / "too old resource version"
 * (the resourceVersion asked for is older than the server's history).
 */
export function isResourceExpired(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as { code?: unknown; statusCode?: unknown; reason?: unknown; message?: unknown; body?: unknown };
  if (v.code === 410 || v.statusCode === 410) return true;
  if (v.reason === 'Expired' || v.reason === 'Gone') return true;
  if (typeof v.message === 'string' && /too old resource version/i.test(v.message)) return true;
  if (typeof v.body === 'object' && v.body !== null && v.body !== value) return isResourceExpired(v.body);
  return false;
}

// ---------------------------------------------------------------------------------------------------
// Cache (pure: no I/O, clock injected)

type Labels = Readonly<Record<string, string>>;

const EMPTY_LABELS: Labels = Object.freeze({});

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface ContainerInfo {
  /** Container id (with runtime prefix) per restart count: the `<n>` of the `<n>.log` the instance writes. */
  ids: ReadonlyMap<number, string>;
  image: string | undefined;
}

interface PodEntry {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  readonly node: string;
  readonly labels: Labels;
  readonly annotations: Labels;
  readonly containers: ReadonlyMap<string, ContainerInfo>;
  readonly excludedPod: boolean;
  readonly excludedContainers: ReadonlySet<string>;
  /** When the pod was deleted (or missing from a relist); undefined while it exists. */
  deletedAt: number | undefined;
  /**
   * Built once per container instance (name, then restart count) and reused for every line; cleared when
   * the pod or its namespace's labels change.
   */
  readonly hits: Map<string, Map<number, MetadataHit>>;
}

interface NamespaceEntry {
  readonly labels: Labels;
  deletedAt: number | undefined;
}

export interface PodMetadataCacheOptions {
  nodeName: string;
  cluster: string;
  deletedPodGraceMs: number;
  maxCachedPods?: number;
  now?: () => number;
  /** Container ids from the kubelet's symlinks, for files whose instance the pod's status does not name yet. */
  containerLinks?: ContainerLinkIndex;
}

/**
 * The pods of one node and the labels of all namespaces, fed by list and watch events, answering
 * lookups by pod uid. Holds no timers and does no I/O: {@link PodMetadataStore} drives it.
 */
export class PodMetadataCache {
  private readonly pods = new Map<string, PodEntry>();
  private readonly namespaces = new Map<string, NamespaceEntry>();
  private readonly fallbacks = new Map<string, Map<string, MetadataFallback>>();
  private readonly now: () => number;
  private readonly graceMs: number;
  private readonly maxPods: number;
  /** `containerd://` or the like, learned from the pods' statuses (one runtime per node). */
  private runtimePrefix: string | undefined;

  constructor(private readonly options: PodMetadataCacheOptions) {
    this.now = options.now ?? Date.now;
    this.graceMs = Math.max(0, options.deletedPodGraceMs);
    this.maxPods = Math.max(1, options.maxCachedPods ?? DEFAULT_MAX_CACHED_PODS);
  }

  /** Pods held, including deleted ones still within their grace period. */
  get podCount(): number {
    return this.pods.size;
  }

  get namespaceCount(): number {
    return this.namespaces.size;
  }

  lookup(path: PodLogPath): MetadataLookup {
    const entry = this.livePod(path.podUid);
    if (entry === undefined) return this.fallback(path);
    let instances = entry.hits.get(path.container);
    const hit = instances?.get(path.restartCount);
    if (hit !== undefined && (hit.metadata[KubernetesField.CONTAINER_ID] !== undefined || this.options.containerLinks === undefined)) return hit;
    const containerId = entry.containers.get(path.container)?.ids.get(path.restartCount) ?? this.linkedContainerId(path);
    // A hit without id stays the same object (one record writer per file) until an id is found.
    if (hit !== undefined && containerId === undefined) return hit;
    const built = this.buildHit(entry, path.container, containerId);
    if (instances === undefined && entry.hits.size < MAX_CONTAINERS_PER_POD) {
      instances = new Map();
      entry.hits.set(path.container, instances);
    }
    if (instances !== undefined) {
      if (instances.size >= MAX_INSTANCES_PER_CONTAINER && !instances.has(path.restartCount)) instances.clear();
      instances.set(path.restartCount, built);
    }
    return built;
  }

  /** The id the kubelet's symlink gives the file's container instance, with the node's runtime prefix. */
  private linkedContainerId(path: PodLogPath): string | undefined {
    const links = this.options.containerLinks;
    if (links === undefined || this.runtimePrefix === undefined) return undefined;
    const id = links.containerIdFor(path);
    return id === undefined ? undefined : this.runtimePrefix + id;
  }

  annotation(podUid: string, key: string): string | undefined {
    const entry = this.livePod(podUid);
    return entry !== undefined && Object.hasOwn(entry.annotations, key) ? entry.annotations[key] : undefined;
  }

  /** A full list: the pods in it replace the cache content; cached pods missing from it count as deleted. */
  replacePods(pods: readonly V1Pod[]): void {
    const seen = new Set<string>();
    for (const pod of pods) {
      const uid = this.upsertPod(pod);
      if (uid !== undefined) seen.add(uid);
    }
    const now = this.now();
    for (const entry of this.pods.values()) {
      if (!seen.has(entry.uid) && entry.deletedAt === undefined) entry.deletedAt = now;
    }
    this.enforceMaxPods();
  }

  applyPod(type: WatchEventType, pod: V1Pod): void {
    const uid = this.upsertPod(pod);
    if (uid === undefined) return;
    if (type === 'DELETED') {
      const entry = this.pods.get(uid);
      if (entry !== undefined) entry.deletedAt ??= this.now();
    }
    this.enforceMaxPods();
  }

  /** A full list of namespaces: replaces the known labels; namespaces missing from it count as deleted. */
  replaceNamespaces(namespaces: readonly V1Namespace[]): void {
    const seen = new Set<string>();
    const changed = new Set<string>();
    for (const namespace of namespaces) {
      const name = namespace.metadata?.name;
      if (!name) continue;
      seen.add(name);
      if (this.upsertNamespace(name, namespace)) changed.add(name);
    }
    const now = this.now();
    for (const [name, entry] of this.namespaces) {
      if (!seen.has(name) && entry.deletedAt === undefined) entry.deletedAt = now;
    }
    this.invalidateNamespaces(changed);
  }

  applyNamespace(type: WatchEventType, namespace: V1Namespace): void {
    const name = namespace.metadata?.name;
    if (!name) return;
    if (this.upsertNamespace(name, namespace)) this.invalidateNamespaces(new Set([name]));
    if (type === 'DELETED') {
      const entry = this.namespaces.get(name);
      if (entry !== undefined) entry.deletedAt ??= this.now();
    }
  }

  /** Drops pods and namespaces whose grace period after deletion has passed; returns how many pods went. */
  evictExpired(): number {
    const now = this.now();
    let evicted = 0;
    for (const [uid, entry] of this.pods) {
      if (entry.deletedAt !== undefined && now - entry.deletedAt >= this.graceMs) {
        this.pods.delete(uid);
        evicted++;
      }
    }
    for (const [name, entry] of this.namespaces) {
      if (entry.deletedAt !== undefined && now - entry.deletedAt >= this.graceMs) this.namespaces.delete(name);
    }
    return evicted;
  }

  clear(): void {
    this.pods.clear();
    this.namespaces.clear();
    this.fallbacks.clear();
  }

  private livePod(uid: string): PodEntry | undefined {
    const entry = this.pods.get(uid);
    if (entry?.deletedAt !== undefined && this.now() - entry.deletedAt >= this.graceMs) {
      this.pods.delete(uid);
      return undefined;
    }
    return entry;
  }

  /** Stores the pod's current state; returns its uid, or undefined when the object is not one of this node's pods. */
  private upsertPod(pod: V1Pod): string | undefined {
    const meta = pod.metadata;
    const uid = meta?.uid;
    const namespace = meta?.namespace;
    const name = meta?.name;
    if (!uid || !namespace || !name) return undefined;
    const node = pod.spec?.nodeName ?? this.options.nodeName;
    if (node !== this.options.nodeName) return undefined;

    const allAnnotations = meta.annotations ?? {};
    const previous = this.pods.get(uid);
    const containers = containersOf(pod, previous?.containers);
    if (this.runtimePrefix === undefined) this.runtimePrefix = runtimePrefixOf(containers);
    this.pods.set(uid, {
      uid,
      namespace,
      name,
      node,
      labels: copyLabels(meta.labels),
      annotations: copyLabels(allAnnotations, OMITTED_ANNOTATIONS),
      containers,
      excludedPod: allAnnotations[ANNOTATION_EXCLUDE]?.trim().toLowerCase() === 'true',
      excludedContainers: parseContainerList(allAnnotations[ANNOTATION_EXCLUDE_CONTAINERS]),
      // A pod seen again (a stale list served from the watch cache) exists until told otherwise.
      deletedAt: undefined,
      hits: new Map(),
    });
    if (previous === undefined) this.fallbacks.delete(uid);
    return uid;
  }

  /** Returns whether the namespace's labels changed (including: were unknown). */
  private upsertNamespace(name: string, namespace: V1Namespace): boolean {
    const labels = copyLabels(namespace.metadata?.labels);
    const previous = this.namespaces.get(name);
    if (previous !== undefined && sameLabels(previous.labels, labels)) {
      previous.deletedAt = undefined;
      return false;
    }
    this.namespaces.set(name, { labels, deletedAt: undefined });
    return true;
  }

  private invalidateNamespaces(names: ReadonlySet<string>): void {
    if (names.size === 0) return;
    for (const entry of this.pods.values()) {
      if (names.has(entry.namespace)) entry.hits.clear();
    }
  }

  /** Bounded memory: beyond the cap, the oldest deleted pods go first; pods that exist are never dropped. */
  private enforceMaxPods(): void {
    if (this.pods.size <= this.maxPods) return;
    const deleted = [...this.pods.values()].filter((e) => e.deletedAt !== undefined).sort((a, b) => (a.deletedAt ?? 0) - (b.deletedAt ?? 0));
    for (const entry of deleted) {
      if (this.pods.size <= this.maxPods) break;
      this.pods.delete(entry.uid);
    }
  }

  private buildHit(entry: PodEntry, container: string, containerId: string | undefined): MetadataHit {
    const info = entry.containers.get(container);
    const metadata: KubernetesMetadata = Object.freeze({
      [KubernetesField.CLUSTER]: this.options.cluster,
      [KubernetesField.NODE]: entry.node,
      [KubernetesField.NAMESPACE]: entry.namespace,
      [KubernetesField.POD]: entry.name,
      [KubernetesField.POD_UID]: entry.uid,
      [KubernetesField.CONTAINER]: container,
      [KubernetesField.CONTAINER_ID]: containerId,
      [KubernetesField.IMAGE]: info?.image,
      [KubernetesField.LABELS]: entry.labels,
      [KubernetesField.ANNOTATIONS]: entry.annotations,
      [KubernetesField.NAMESPACE_LABELS]: this.namespaces.get(entry.namespace)?.labels ?? EMPTY_LABELS,
    });
    return Object.freeze({ kind: 'hit', metadata, excluded: entry.excludedPod || entry.excludedContainers.has(container) });
  }

  private fallback(path: PodLogPath): MetadataFallback {
    let byContainer = this.fallbacks.get(path.podUid);
    const cached = byContainer?.get(path.container);
    if (cached !== undefined) return cached;
    if (byContainer === undefined) {
      if (this.fallbacks.size >= MAX_FALLBACK_PODS) this.fallbacks.clear();
      byContainer = new Map();
      this.fallbacks.set(path.podUid, byContainer);
    }
    const metadata: KubernetesMetadata = Object.freeze({
      [KubernetesField.CLUSTER]: this.options.cluster,
      [KubernetesField.NODE]: this.options.nodeName,
      [KubernetesField.NAMESPACE]: path.namespace,
      [KubernetesField.POD]: path.pod,
      [KubernetesField.POD_UID]: path.podUid,
      [KubernetesField.CONTAINER]: path.container,
      [KubernetesField.LABELS]: EMPTY_LABELS,
      [KubernetesField.ANNOTATIONS]: EMPTY_LABELS,
      [KubernetesField.NAMESPACE_LABELS]: EMPTY_LABELS,
    });
    const lookup: MetadataFallback = Object.freeze({ kind: 'fallback', metadata });
    if (byContainer.size < MAX_CONTAINERS_PER_POD) byContainer.set(path.container, lookup);
    return lookup;
  }
}

function copyLabels(source: Record<string, string> | undefined, omit?: ReadonlySet<string>): Labels {
  if (source === undefined) return EMPTY_LABELS;
  const keys = Object.keys(source);
  if (keys.length === 0) return EMPTY_LABELS;
  const copy: Record<string, string> = {};
  for (const key of keys) {
    const value = source[key];
    if (typeof value === 'string' && omit?.has(key) !== true) copy[key] = value;
  }
  return Object.freeze(copy);
}

function sameLabels(a: Labels, b: Labels): boolean {
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
}

function parseContainerList(value: string | undefined): ReadonlySet<string> {
  if (value === undefined) return new Set();
  return new Set(
    value
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== ''),
  );
}

/** What one entry of `status.*ContainerStatuses[]` holds that {@link containerIdsOf} reads. */
export interface ContainerStatusIds {
  restartCount?: number;
  containerID?: string;
  lastState?: { terminated?: { containerID?: string } };
}

/**
 * The container id of each instance of one container that a status names, by restart count (the `<n>`
 * of the `<n>.log` the instance writes): `containerID` is the instance counted by `restartCount` (the
 * running one, or the last one while the kubelet waits to restart it); `lastState.terminated` is the
 * one before it when its id differs. An instance the status does not name gets no entry: never another
 * instance's id.
 */
export function containerIdsOf(status: ContainerStatusIds): Map<number, string> {
  const ids = new Map<number, string>();
  const restart = status.restartCount;
  if (typeof restart !== 'number' || !Number.isInteger(restart) || restart < 0) return ids;
  const current = status.containerID || undefined;
  const last = status.lastState?.terminated?.containerID || undefined;
  if (current !== undefined) ids.set(restart, current);
  // Without a current id, the terminated one cannot be placed with certainty.
  if (current !== undefined && last !== undefined && last !== current && restart > 0) ids.set(restart - 1, last);
  return ids;
}

/** `containerd://` of `containerd://abc…`: what the kubelet puts before the runtime's id. */
export function runtimePrefixOf(containers: ReadonlyMap<string, ContainerInfo>): string | undefined {
  for (const info of containers.values()) {
    for (const id of info.ids.values()) {
      const m = /^[a-z0-9][a-z0-9.+-]*:\/\//.exec(id);
      if (m !== null) return m[0];
    }
  }
  return undefined;
}

/**
 * Image and container ids per container name, across init, regular and ephemeral containers. Ids the
 * previous state of the pod knew are kept (an instance's id never changes) for the newest few instances,
 * so that a file still read after the status moved on keeps its id.
 */
function containersOf(pod: V1Pod, previous?: ReadonlyMap<string, ContainerInfo>): Map<string, ContainerInfo> {
  const containers = new Map<string, ContainerInfo>();
  const spec = pod.spec;
  for (const list of [spec?.initContainers, spec?.containers, spec?.ephemeralContainers]) {
    for (const c of list ?? []) containers.set(c.name, { ids: previous?.get(c.name)?.ids ?? new Map(), image: c.image || undefined });
  }
  const status = pod.status;
  for (const list of [status?.initContainerStatuses, status?.containerStatuses, status?.ephemeralContainerStatuses]) {
    for (const s of list ?? []) {
      const known = containers.get(s.name);
      const ids = new Map(known?.ids ?? previous?.get(s.name)?.ids);
      for (const [restart, id] of containerIdsOf(s)) ids.set(restart, id);
      containers.set(s.name, { ids: newestInstances(ids), image: known?.image ?? (s.image || undefined) });
    }
  }
  return containers;
}

function newestInstances(ids: Map<number, string>): ReadonlyMap<number, string> {
  if (ids.size <= MAX_INSTANCES_PER_CONTAINER) return ids;
  const kept = [...ids].sort((a, b) => b[0] - a[0]).slice(0, MAX_INSTANCES_PER_CONTAINER);
  return new Map(kept);
}

// ---------------------------------------------------------------------------------------------------
// Store: the cache plus the list+watch loops that feed it

interface KubeObject {
  metadata?: { resourceVersion?: string };
}

interface ResourceWatch<T extends KubeObject> {
  readonly resource: WatchedResource;
  readonly path: string;
  readonly fieldSelector: string | undefined;
  list(resourceVersion: string | undefined, signal: AbortSignal): Promise<{ items: T[]; resourceVersion: string | undefined }>;
  replace(items: readonly T[]): void;
  apply(type: WatchEventType, item: T): void;
}

/** A round's end as the loop sees it: the decision input plus whether the watch delivered anything. */
interface WatchRound {
  end: WatchEnd;
  events: number;
}

export class PodMetadataStore {
  private readonly cache: PodMetadataCache;
  private readonly logger: Logger;
  private readonly rateLimited: RateLimitedLog;
  private readonly now: () => number;
  private readonly backoff: BackoffOptions;
  private readonly stop = new AbortController();
  private readonly healthy: Record<WatchedResource, boolean> = { pods: false, namespaces: false };
  private readonly listed: Record<WatchedResource, boolean> = { pods: false, namespaces: false };
  private readonly firstSync: Promise<boolean>;
  private resolveFirstSync: (synced: boolean) => void = () => undefined;
  private loops: Promise<void>[] = [];
  private sweepTimer: NodeJS.Timeout | undefined;
  private started = false;
  private closed = false;

  constructor(
    private readonly kube: KubeClients,
    private readonly options: PodMetadataOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.logger = options.logger.child({ component: 'pod-metadata' });
    this.rateLimited = new RateLimitedLog(this.logger, 60_000, this.now);
    this.backoff = options.backoff ?? DEFAULT_WATCH_BACKOFF;
    this.cache = new PodMetadataCache({
      nodeName: options.nodeName,
      cluster: options.cluster,
      deletedPodGraceMs: options.deletedPodGraceMs,
      maxCachedPods: options.maxCachedPods,
      now: this.now,
      containerLinks: options.containerLinks,
    });
    this.firstSync = new Promise((resolve) => {
      this.resolveFirstSync = resolve;
    });
  }

  /** Begins the list+watch loops in the background; never throws; never blocks shipping. */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    const sweepMs = Math.min(30_000, Math.max(250, Math.floor(this.options.deletedPodGraceMs / 4)));
    this.sweepTimer = setInterval(() => this.cache.evictExpired(), sweepMs);
    this.sweepTimer.unref();
    this.loops = [this.spawnLoop(this.podsWatch()), this.spawnLoop(this.namespacesWatch())];
  }

  /**
   * Resolves true once the pods and the namespaces were listed once, or false after `timeoutMs` (or when
   * the store closes first). For readiness only: lookups answer (with fallbacks) before it.
   */
  waitForFirstSync(timeoutMs: number): Promise<boolean> {
    if (this.listed.pods && this.listed.namespaces) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      timer.unref();
      void this.firstSync.then((synced) => {
        clearTimeout(timer);
        resolve(synced);
      });
    });
  }

  /** True while the last list/watch of both pods and namespaces is healthy. */
  get synced(): boolean {
    return !this.closed && this.healthy.pods && this.healthy.namespaces;
  }

  /** By `path.podUid`, then container; an unknown pod (or one past its grace period) gives a fallback from the path. */
  lookup(path: PodLogPath): MetadataLookup {
    return this.cache.lookup(path);
  }

  /** Per-pod annotation values the agent uses (e.g. `logship.io/multiline: java`), undefined when the pod is unknown. */
  annotation(podUid: string, key: string): string | undefined {
    return this.cache.annotation(podUid, key);
  }

  /** Stops watches and timers; nothing keeps the process alive afterwards. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stop.abort();
    if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    this.resolveFirstSync(false);
    await Promise.all(this.loops);
    this.cache.clear();
  }

  private podsWatch(): ResourceWatch<V1Pod> {
    const fieldSelector = `spec.nodeName=${this.options.nodeName}`;
    return {
      resource: 'pods',
      path: '/api/v1/pods',
      fieldSelector,
      list: async (resourceVersion, signal) => {
        const list = await this.kube.core.listPodForAllNamespaces({ fieldSelector, resourceVersion }, this.kube.withSignal(signal));
        return { items: list.items, resourceVersion: list.metadata?.resourceVersion };
      },
      replace: (items) => this.cache.replacePods(items),
      apply: (type, item) => this.cache.applyPod(type, item),
    };
  }

  private namespacesWatch(): ResourceWatch<V1Namespace> {
    return {
      resource: 'namespaces',
      path: '/api/v1/namespaces',
      fieldSelector: undefined,
      list: async (resourceVersion, signal) => {
        const list = await this.kube.core.listNamespace({ resourceVersion }, this.kube.withSignal(signal));
        return { items: list.items, resourceVersion: list.metadata?.resourceVersion };
      },
      replace: (items) => this.cache.replaceNamespaces(items),
      apply: (type, item) => this.cache.applyNamespace(type, item),
    };
  }

  private spawnLoop<T extends KubeObject>(watch: ResourceWatch<T>): Promise<void> {
    return this.runLoop(watch).catch((error: unknown) => {
      this.healthy[watch.resource] = false;
      this.logger.error({ resource: watch.resource, err: describeError(error) }, 'kubernetes metadata loop stopped unexpectedly');
    });
  }

  /** list → watch → (resume | relist | backoff + relist), until closed. Never rejects. */
  private async runLoop<T extends KubeObject>(watch: ResourceWatch<T>): Promise<void> {
    const signal = this.stop.signal;
    let resourceVersion: string | undefined;
    let consistentList = false;
    let attempt = 0;
    let goneInARow = 0;
    while (!signal.aborted) {
      let round: WatchRound;
      try {
        if (resourceVersion === undefined) {
          resourceVersion = await this.list(watch, consistentList, signal);
          consistentList = false;
        }
        round = await this.watchOnce(watch, resourceVersion, signal, (rv) => (resourceVersion = rv));
      } catch (error) {
        round = { end: { kind: 'failed', error }, events: 0 };
      }
      // Read again: the round awaited, and close() may have aborted meanwhile.
      if (isAborted(signal)) break;
      if (round.events > 0) {
        attempt = 0;
        goneInARow = 0;
      }

      const step = decideWatchRestart(round.end);
      if (step.action === 'resume') continue;
      resourceVersion = undefined;
      this.reportRestart(watch.resource, step.reason);
      if (step.action === 'relist') {
        consistentList = true;
        // A fresh list cannot be too old at once: a second 410 without any event between backs off like an error.
        if (goneInARow++ === 0) {
          this.logger.info({ resource: watch.resource }, 'resource version too old (410 Gone): relisting');
          continue;
        }
      }
      this.healthy[watch.resource] = false;
      const delayMs = backoffDelayMs(attempt++, this.backoff);
      this.logger.warn(
        { resource: watch.resource, server: this.kube.server, attempt, delayMs, err: describeEnd(round.end) },
        'kubernetes list/watch failed: metadata falls back to the log path until it recovers',
      );
      try {
        await abortableSleep(delayMs, signal);
      } catch {
        break; // closed during the backoff
      }
    }
    this.healthy[watch.resource] = false;
  }

  /** Lists and replaces the cache content; returns the list's resourceVersion to watch from. */
  private async list<T extends KubeObject>(watch: ResourceWatch<T>, consistent: boolean, signal: AbortSignal): Promise<string> {
    const timeout = AbortSignal.timeout(LIST_TIMEOUT_MS);
    // "0": any recent state, served from the API server's cache; after 410 Gone, a consistent read.
    const listed = await watch.list(consistent ? undefined : '0', AbortSignal.any([signal, timeout]));
    if (!listed.resourceVersion) {
      throw new LogshipError(`list of ${watch.resource} returned no resourceVersion`, { code: ErrorCode.KUBERNETES, retriable: true });
    }
    watch.replace(listed.items);
    this.healthy[watch.resource] = true;
    if (!this.listed[watch.resource]) {
      this.listed[watch.resource] = true;
      this.logger.info({ resource: watch.resource, count: listed.items.length, server: this.kube.server }, 'kubernetes metadata listed');
      if (this.listed.pods && this.listed.namespaces) this.resolveFirstSync(true);
    }
    return listed.resourceVersion;
  }

  /** One watch request, resolved when it ends for any reason (never rejects). */
  private watchOnce<T extends KubeObject>(
    watch: ResourceWatch<T>,
    resourceVersion: string,
    signal: AbortSignal,
    onResourceVersion: (rv: string) => void,
  ): Promise<WatchRound> {
    return new Promise<WatchRound>((resolve) => {
      const startedAt = this.now();
      const timeoutSeconds = WATCH_TIMEOUT_MIN_S + Math.floor(Math.random() * WATCH_TIMEOUT_SPREAD_S);
      let events = 0;
      let settled = false;
      let request: AbortController | undefined;

      const finish = (end: WatchEnd): void => {
        if (settled) return;
        settled = true;
        clearTimeout(stallTimer);
        signal.removeEventListener('abort', onAbort);
        request?.abort();
        resolve({ end, events });
      };
      const onAbort = (): void => finish({ kind: 'failed', error: signal.reason });
      signal.addEventListener('abort', onAbort, { once: true });
      const stallTimer = setTimeout(() => {
        finish({ kind: 'failed', error: new LogshipError(`${watch.resource} watch outlived its ${timeoutSeconds}s timeout: connection presumed dead`, { code: ErrorCode.KUBERNETES, retriable: true }) });
      }, timeoutSeconds * 1000 + WATCH_STALL_MARGIN_MS);
      stallTimer.unref();

      const onEvent = (type: string, object: unknown): void => {
        if (settled) return;
        if (type === 'ERROR') {
          finish({ kind: 'status', status: object });
          return;
        }
        events++;
        if (typeof object !== 'object' || object === null) return;
        const item = object as T;
        const rv = item.metadata?.resourceVersion;
        if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') {
          try {
            watch.apply(type, item);
          } catch (error) {
            this.rateLimited.warn(`apply_${watch.resource}`, { resource: watch.resource, type, err: describeError(error) }, 'ignored a watch event that could not be applied');
          }
        }
        // BOOKMARK carries only a resourceVersion: where to resume without replaying anything.
        if (rv) onResourceVersion(rv);
      };
      const onDone = (error: unknown): void => {
        if (error === null || error === undefined) finish({ kind: 'closed', events, durationMs: this.now() - startedAt });
        else finish({ kind: 'failed', error });
      };

      this.kube.watch
        .watch(
          watch.path,
          { fieldSelector: watch.fieldSelector, resourceVersion, allowWatchBookmarks: true, timeoutSeconds },
          onEvent,
          onDone,
        )
        .then(
          (controller) => {
            request = controller;
            if (settled) controller.abort();
          },
          (error: unknown) => finish({ kind: 'failed', error }),
        );
    });
  }

  private reportRestart(resource: WatchedResource, reason: WatchRestartReason): void {
    try {
      this.options.onWatchRestart?.(resource, reason);
    } catch (error) {
      this.rateLimited.warn('on_watch_restart', { err: describeError(error) }, 'onWatchRestart callback threw');
    }
  }
}

function isAborted(signal: AbortSignal): boolean {
  return signal.aborted;
}

function describeEnd(end: WatchEnd): string {
  switch (end.kind) {
    case 'closed':
      return `watch closed by the server after ${end.durationMs} ms without events`;
    case 'status': {
      const status = end.status as { code?: unknown; reason?: unknown; message?: unknown } | null;
      return `watch ERROR event: ${String(status?.code)} ${String(status?.reason)} ${String(status?.message)}`;
    }
    case 'failed':
      return describeError(end.error);
  }
}
