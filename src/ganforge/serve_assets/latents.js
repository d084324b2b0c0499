// Seeds to latent vectors, exactly as ganforge/serve/latents.py draws them (read its docstring):
// mulberry32 uniforms, Box-Muller normals in float64, rounded to float32; slerp between two seeds.

export function uniforms(seed, n) {
  let state = seed >>> 0;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1) >>> 0;
    t = (t ^ ((t + (Math.imul(t ^ (t >>> 7), t | 61) >>> 0)) >>> 0)) >>> 0;
    out[i] = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  return out;
}

export function normals(seed, n) {
  const u = uniforms(seed, 2 * Math.floor((n + 1) / 2));
  const out = new Float64Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - u[i]));
    out[i] = r * Math.cos(2 * Math.PI * u[i + 1]);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * u[i + 1]);
  }
  return out;
}

function norm(a) { let s = 0; for (const v of a) s += v * v; return Math.sqrt(s); }

export function slerp(a, b, t) {
  const na = norm(a), nb = norm(b);
  let dot = 0;
  for (let i = 0; i < a.length; i++) dot += (a[i] / na) * (b[i] / nb);
  const omega = Math.acos(Math.min(Math.max(dot, -1 + 1e-7), 1 - 1e-7));
  const so = Math.sin(omega);
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) {
    out[i] = Math.abs(so) < 1e-6 ? (1 - t) * a[i] + t * b[i]
      : (Math.sin((1 - t) * omega) * a[i] + Math.sin(t * omega) * b[i]) / so;
  }
  return out;
}

// z for seed A, or on the way from seed A to seed B at t in [0, 1] (float32).
export function pageNoise(dim, seedA, seedB = null, t = 0) {
  let z = normals(seedA, dim);
  if (seedB !== null && t !== 0) z = slerp(z, normals(seedB, dim), t);
  return Float32Array.from(z);
}
