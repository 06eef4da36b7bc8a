/**
 * What the demo writes: four pods in two namespaces, five containers, each with its own kind of log
 * line (nginx access logs, JSON, envoy, a Java-style API with long request bodies, a batch worker),
 * generated from a seeded random source so that a run can be compared with another.
 */

/** The example Elasticsearch query: stderr of this app. */
export const QUERY_APP = 'payments-api';

export type Random = () => number;

export interface LineContext {
  /** Unique in the run: every message carries it, so what landed can be matched to what was written. */
  id: string;
  time: Date;
  rnd: Random;
}

export interface ContainerPlan {
  name: string;
  image: string;
  lines: number;
  stderrShare: number;
  /** Share of stdout lines longer than the runtime's 16 KiB chunk. */
  longShare: number;
  stdout: (c: LineContext) => string;
  stderr: (c: LineContext) => string;
  long?: (c: LineContext) => string;
  /** This container's 0.log is rotated once while the agent runs. */
  rotates?: boolean;
}

export interface PodPlan {
  namespace: 'shop' | 'payments';
  name: string;
  labels: Record<string, string>;
  containers: ContainerPlan[];
}

const pick = <T>(rnd: Random, items: readonly T[]): T => items[Math.floor(rnd() * items.length)] as T;
const int = (rnd: Random, min: number, max: number): number => min + Math.floor(rnd() * (max - min + 1));

function longJson(c: LineContext, targetBytes: number, item: (i: number) => Record<string, unknown>): string {
  const items: string[] = [];
  let bytes = 0;
  for (let i = 0; bytes < targetBytes; i++) {
    const text = JSON.stringify(item(i));
    items.push(text);
    bytes += text.length + 1;
  }
  return `[${items.join(',')}] req_id=${c.id}`;
}

const PATHS = ['/', '/products', '/products/1432', '/products/877', '/cart', '/checkout', '/static/app.js', '/static/app.css', '/healthz'] as const;

const NGINX: ContainerPlan = {
  name: 'nginx',
  image: 'nginx:1.27',
  lines: 1_200,
  stderrShare: 0.06,
  longShare: 0,
  rotates: true,
  stdout: (c) => {
    const path = pick(c.rnd, PATHS);
    const status = c.rnd() < 0.04 ? pick(c.rnd, [404, 499, 502]) : 200;
    return `198.51.100.${int(c.rnd, 0, 9) * 25 + int(c.rnd, 2, 24)} - - "GET ${path} HTTP/1.1" ${status} ${int(c.rnd, 120, 48_000)} "-" "Mozilla/5.0" rt=${(c.rnd() / 5).toFixed(3)} req_id=${c.id}`;
  },
  stderr: (c) => `[warn] 29#29: *${int(c.rnd, 1, 99_999)} upstream response is buffered to a temporary file /var/cache/nginx/proxy_temp/1/00/${int(c.rnd, 1_000, 9_999)} req_id=${c.id}`,
};

const CART: ContainerPlan = {
  name: 'cart',
  image: 'registry.example/shop/cart:2.4.1',
  lines: 700,
  stderrShare: 0.1,
  longShare: 0,
  stdout: (c) => JSON.stringify({ level: 'info', msg: pick(c.rnd, ['cart updated', 'cart read', 'item added', 'item removed']), cart_id: `c-${int(c.rnd, 100, 999)}`, items: int(c.rnd, 0, 12), req_id: c.id }),
  stderr: (c) => JSON.stringify({ level: 'error', msg: 'redis: i/o timeout', attempt: int(c.rnd, 1, 3), req_id: c.id }),
};

const ENVOY: ContainerPlan = {
  name: 'envoy',
  image: 'envoyproxy/envoy:v1.31',
  lines: 300,
  stderrShare: 0.05,
  longShare: 0,
  stdout: (c) => `[${c.time.toISOString()}] "POST /cart.v1.Cart/Update HTTP/2" 200 - via_upstream - "-" ${int(c.rnd, 40, 900)} ${int(c.rnd, 20, 400)} ${int(c.rnd, 1, 40)} "cart:8080" req_id=${c.id}`,
  stderr: (c) => `[warning][config] gRPC config stream to xds-grpc closed: 13, req_id=${c.id}`,
};

const API: ContainerPlan = {
  name: 'api',
  image: 'registry.example/payments/api:7.0.2',
  lines: 1_100,
  stderrShare: 0.08,
  longShare: 0.02,
  stdout: (c) => `INFO  PaymentController - POST /v1/payments ${pick(c.rnd, [201, 201, 201, 402])} amount=${(c.rnd() * 200).toFixed(2)} currency=${pick(c.rnd, ['EUR', 'USD', 'JPY'])} req_id=${c.id}`,
  stderr: (c) => `ERROR PaymentService - card declined by issuer (code ${pick(c.rnd, ['05', '51', '54'])}) req_id=${c.id}`,
  long: (c) => `DEBUG PaymentController - request body: ${longJson(c, int(c.rnd, 17_000, 45_000), (i) => ({ sku: `SKU-${String(i).padStart(5, '0')}`, qty: (i % 3) + 1, price: ((i * 37) % 200).toFixed(2) }))}`,
};

const WORKER: ContainerPlan = {
  name: 'worker',
  image: 'registry.example/payments/worker:7.0.2',
  lines: 700,
  stderrShare: 0.12,
  longShare: 0.03,
  stdout: (c) => `INFO  SettlementJob - settled payment pay_${int(c.rnd, 100_000, 999_999)} in ${int(c.rnd, 3, 900)} ms req_id=${c.id}`,
  stderr: (c) => `WARN  SettlementJob - retrying payment pay_${int(c.rnd, 100_000, 999_999)}: acquirer returned 503 req_id=${c.id}`,
  long: (c) => `INFO  SettlementJob - batch report: ${longJson(c, int(c.rnd, 20_000, 36_000), (i) => ({ payment: `pay_${String(100_000 + i)}`, status: i % 11 === 0 ? 'retry' : 'settled' }))}`,
};

export const PODS: PodPlan[] = [
  { namespace: 'shop', name: 'web', labels: { app: 'web', tier: 'frontend', version: 'v3' }, containers: [NGINX] },
  { namespace: 'shop', name: 'cart', labels: { app: 'cart', tier: 'backend' }, containers: [CART, ENVOY] },
  { namespace: 'payments', name: 'api', labels: { app: QUERY_APP, tier: 'backend' }, containers: [API] },
  { namespace: 'payments', name: 'worker', labels: { app: 'payments-worker', tier: 'batch' }, containers: [WORKER] },
];

export const NAMESPACE_LABELS: Record<PodPlan['namespace'], Record<string, string>> = {
  shop: { team: 'storefront', env: 'demo' },
  payments: { team: 'payments', env: 'demo', 'pci-scope': 'true' },
};

/** A small seeded generator: the same run id yields the same log content. */
export function mulberry32(seed: number): Random {
  let state = seed | 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}
