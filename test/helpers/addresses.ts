/** The IPv4 ranges that real networks use privately (RFC 1918): no address the stack hands out may fall in them. */
const PRIVATE_RANGES: readonly [string, number][] = [
  ['10.0.0.0', 8],
  ['172.16.0.0', 12],
  ['192.168.0.0', 16],
];

function ipv4ToInt(ip: string): number | undefined {
  const parts = ip.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return undefined;
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

/** Whether an IPv4 address, or any address of an IPv4 CIDR, lies in 10/8, 172.16/12 or 192.168/16. */
export function inPrivateRange(addressOrCidr: string): boolean {
  const [ip = '', bitsText] = addressOrCidr.split('/');
  const value = ipv4ToInt(ip);
  if (value === undefined) return false;
  const bits = bitsText === undefined ? 32 : Number(bitsText);
  const first = value - (value % 2 ** (32 - bits));
  const last = first + 2 ** (32 - bits) - 1;
  return PRIVATE_RANGES.some(([base, size]) => {
    const start = ipv4ToInt(base) ?? 0;
    const end = start + 2 ** (32 - size) - 1;
    return first <= end && last >= start;
  });
}
