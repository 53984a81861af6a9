// PNG text chunks (tEXt, zTXt, iTXt) read in the browser: ComfyUI and nodegraph store the API
// prompt under `prompt` and the editor's workflow under `workflow`.

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

export function isPng(bytes) {
  return bytes.length >= 8 && SIGNATURE.every((b, i) => bytes[i] === b);
}

function latin1(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return s;
}

async function inflate(bytes) {
  // zTXt / compressed iTXt use zlib streams: the "deflate" format of the Compression Streams API.
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** All text chunks as {keyword: text}. Throws on a file that is not a PNG. */
export async function readPngText(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  if (!isPng(bytes)) throw new Error("not a PNG file");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const chunks = {};
  let pos = 8;
  while (pos + 8 <= bytes.length) {
    const length = view.getUint32(pos);
    const kind = latin1(bytes.subarray(pos + 4, pos + 8));
    const body = bytes.subarray(pos + 8, pos + 8 + length);
    pos += 12 + length;
    if (kind === "IEND") break;
    const zero = body.indexOf(0);
    if (zero < 0) continue;
    const key = latin1(body.subarray(0, zero));
    try {
      if (kind === "tEXt") {
        chunks[key] = latin1(body.subarray(zero + 1));
      } else if (kind === "zTXt") {
        chunks[key] = latin1(await inflate(body.subarray(zero + 2)));
      } else if (kind === "iTXt") {
        const compressed = body[zero + 1] === 1;
        let p = zero + 3;
        p = body.indexOf(0, p) + 1; // language tag
        p = body.indexOf(0, p) + 1; // translated keyword
        const text = body.subarray(p);
        chunks[key] = new TextDecoder().decode(compressed ? await inflate(text) : text);
      }
    } catch {
      // A damaged chunk is skipped; the others may still hold the workflow.
    }
  }
  return chunks;
}
