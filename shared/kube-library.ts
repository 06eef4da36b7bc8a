/**
 * The parts of @kubernetes/client-node the project uses, by name. The binaries are bundled
 * (scripts/bundle.ts), and a bundler keeps only what is named here: the library's other generated
 * APIs and their sources (21 MB of JavaScript in all, about 70 MiB of resident memory once loaded)
 * stay out of the agent. Loaded on first use through shared/kube.ts.
 */
export { CoreV1Api, KubeConfig, Observable, Watch } from '@kubernetes/client-node';
