/**
 * What the kubelet's log path tells about a line before the API server is asked:
 * `<root>/<namespace>_<pod>_<uid>/<container>/<restart>.log`.
 */

export interface PodLogPath {
  namespace: string;
  pod: string;
  /** The pod's uid as the kubelet wrote it (a UUID; for static pods, the hash the kubelet uses as uid). */
  podUid: string;
  container: string;
  /** The `<n>` of `<n>.log`: how many times the container restarted when the file was created. */
  restartCount: number;
  /** The path as given. */
  file: string;
}

/** `<restart>.log` only: rotated copies (`0.log.20261122-041719`) and `.gz` files never match. */
const LOG_FILE_NAME = /^(0|[1-9][0-9]{0,8})\.log$/;

/**
 * Parses `<root>/<namespace>_<pod>_<uid>/<container>/<n>.log`; undefined for anything else (rotated
 * `0.log.20261122-041719`, `.gz`, wrong depth, a file outside `root`).
 *
 * Namespace and pod names are DNS labels/subdomains and the uid is a UUID, so none of them contains
 * `_`: the directory name splits on `_` into exactly three parts (pod names keep their dots and dashes).
 */
export function parsePodLogPath(file: string, root: string): PodLogPath | undefined {
  const base = root.endsWith('/') ? root.slice(0, -1) : root;
  if (!file.startsWith(`${base}/`)) return undefined;
  const parts = file.slice(base.length + 1).split('/');
  if (parts.length !== 3) return undefined;
  const [directory, container, name] = parts;
  if (directory === undefined || container === undefined || name === undefined || container === '') return undefined;

  const restart = LOG_FILE_NAME.exec(name);
  if (restart?.[1] === undefined) return undefined;

  const ids = directory.split('_');
  if (ids.length !== 3) return undefined;
  const [namespace, pod, podUid] = ids;
  if (!namespace || !pod || !podUid) return undefined;

  return { namespace, pod, podUid, container, restartCount: Number(restart[1]), file };
}

/** What the name of a kubelet symlink in `/var/log/containers` tells. */
export interface ContainerLinkName {
  /** `<pod>_<namespace>_<container>`, as the kubelet joined them (names hold no `_`). */
  pod: string;
  namespace: string;
  container: string;
  /** The runtime's container id, without the runtime prefix (`containerd://`). */
  containerId: string;
}

/** Container ids of CRI runtimes (containerd, CRI-O) are 64 lowercase hex digits. */
const CONTAINER_LINK_NAME = /^([^_/]+)_([^_/]+)_([^/]+)-([0-9a-f]{64})\.log$/;

/**
 * Parses `<pod>_<namespace>_<container>-<containerId>.log`, the symlink the kubelet creates in
 * `/var/log/containers` right after it starts a container. Undefined for anything else, including a
 * name the kubelet cut at 255 characters (its id would be incomplete).
 */
export function parseContainerLinkName(name: string): ContainerLinkName | undefined {
  const m = CONTAINER_LINK_NAME.exec(name);
  if (m === null) return undefined;
  const [, pod, namespace, container, containerId] = m;
  if (!pod || !namespace || !container || !containerId) return undefined;
  return { pod, namespace, container, containerId };
}

/**
 * The part of a pod log path that names one container instance's file:
 * `<namespace>_<pod>_<uid>/<container>/<n>.log`, whatever folder holds it. Undefined when the path
 * has fewer parts or its last part is not `<n>.log`.
 */
export function instanceKeyOf(file: string): string | undefined {
  const parts = file.split('/');
  if (parts.length < 3) return undefined;
  const [directory, container, name] = parts.slice(-3);
  if (!directory || !container || name === undefined || !LOG_FILE_NAME.test(name)) return undefined;
  return `${directory}/${container}/${name}`;
}
