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
