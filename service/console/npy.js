// The .npy format (NumPy's format.rst): magic "\x93NUMPY", version byte pair, a header
// length (uint16 for version 1, uint32 for 2 and 3), then a Python-literal header
// {'descr': '<f4', 'fortran_order': False, 'shape': (4, 64), } and the raw data.
// Read here: little-endian (or single-byte) floats, ints and bools in C order.

const TYPES = {
  f4: Float32Array, f8: Float64Array,
  i1: Int8Array, i2: Int16Array, i4: Int32Array, i8: BigInt64Array,
  u1: Uint8Array, u2: Uint16Array, u4: Uint32Array, u8: BigUint64Array,
  b1: Uint8Array,
};

export class NpyError extends Error {}

export function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];
  if (bytes.length < 10 || magic.some((b, i) => bytes[i] !== b)) {
    throw new NpyError("not a .npy file (it does not start with \\x93NUMPY)");
  }
  const major = bytes[6];
  const view = new DataView(buffer);
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const headerStart = major === 1 ? 10 : 12;
  const header = new TextDecoder(major === 3 ? "utf-8" : "latin1")
    .decode(bytes.subarray(headerStart, headerStart + headerLength));
  const descr = /'descr'\s*:\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || !fortran || shapeText === undefined) {
    throw new NpyError(`unreadable .npy header: ${header.trim()}`);
  }
  if (fortran === "True") throw new NpyError("Fortran-order arrays are not read; save in C order");
  const order = descr[0];
  const kind = descr.slice(1);
  if (order === ">" && kind.slice(1) !== "1") {
    throw new NpyError(`big-endian dtype '${descr}' is not read; save little-endian`);
  }
  const Type = TYPES[kind];
  if (!Type) throw new NpyError(`dtype '${descr}' is not read: use float32/64, int or uint`);
  const shape = shapeText.split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const offset = headerStart + headerLength;
  const needed = count * Type.BYTES_PER_ELEMENT;
  if (bytes.length - offset < needed) {
    throw new NpyError(`.npy data is ${bytes.length - offset} bytes; shape ${JSON.stringify(shape)} needs ${needed}`);
  }
  const typed = new Type(buffer.slice(offset, offset + needed));
  const values = Array.from(typed, (v) => (typeof v === "bigint" ? Number(v) : v));
  return { dtype: descr, shape, values };
}

// Flat C-order values as nested arrays of the given shape.
export function nest(values, shape) {
  if (shape.length === 0) return values[0];
  const build = (start, dims) => {
    if (dims.length === 1) return values.slice(start, start + dims[0]);
    const inner = dims.slice(1).reduce((a, b) => a * b, 1);
    return Array.from({ length: dims[0] }, (_, i) => build(start + i * inner, dims.slice(1)));
  };
  return build(0, shape);
}
