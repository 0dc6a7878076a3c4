// The component-model canonical ABI for `wasmgate:plugin@0.1.0`, written by hand.
//
// AssemblyScript has no WIT bindings generator, so this file does what one would: it
// knows where the host puts each WIT value in linear memory, reads ("lifts") the values
// a plugin needs, writes ("lowers") the values it returns, declares the host imports with
// their lowered signatures and exports the allocator the host calls (`cabi_realloc`).
// It has no plugin logic: copy it into any AssemblyScript plugin for this package.
//
// How the host calls an export (CanonicalABI.md, "flattening"):
//   * Parameters flatten to core values (a string is 2 × i32, an option<list<u8>> 3, a
//     request 9, a context 15). Above 16 flat values the host instead writes the
//     parameters as one tuple into memory it allocates with `cabi_realloc`, and passes a
//     single i32 pointer. `on-request(req, ctx)` (24) and `on-response(resp, ctx)` (21)
//     take that pointer; `validate-config(config)` takes (ptr, len).
//   * A result that flattens to more than one value is returned through memory: the
//     export returns an i32 pointer to it. All three exports do that.
//   * Imports are the mirror image: `config() -> string` takes a pointer where the host
//     writes (ptr, len) of a string it allocated with our `cabi_realloc`.
//
// Memory layouts (every type here has alignment 4; offsets in bytes):
//   string, list<T>            ptr u32 @0, len u32 @4 (len counts elements; string: bytes)  8
//   header                     name string @0, value list<u8> @8                           16
//   tuple<string, string>      first @0, second @8                                         16
//   option<T>                  tag u8 @0 (0 none, 1 some), T @4                      4 + |T|
//   request                    method @0, uri @8, headers @16, body option<list<u8>> @24   36
//   response                   status u16 @0, headers @4, body option<list<u8>> @12        24
//   identity                   subject @0, claims @8                                       16
//   context                    route @0, client-ip @8, request-id @16,
//                              identity option<identity> @24, params @44, vars @52         60
//   result<T, E>               tag u8 @0 (0 ok, 1 err), payload @4              4 + max(T, E)
//
// Memory management: built with `--runtime stub`, a bump allocator with no GC and no
// free. Everything a call allocates (its arguments, the strings it builds, its results)
// is garbage once the host has read the results, and the host says when that is: it
// calls the export's post-return function, `cabi_post_<export>`. Ours, `releaseAll`,
// resets the whole heap. So memory stays bounded even when the gateway keeps instances
// between calls (`limits.reuse`); with a fresh instance per call it costs nothing.

// ---------------------------------------------------------------------------------------
// Record layouts

export namespace Str {
  export const PTR: usize = 0;
  export const LEN: usize = 4;
  export const SIZE: usize = 8;
}

export namespace Header {
  export const NAME: usize = 0;
  export const VALUE: usize = 8;
  export const SIZE: usize = 16;
}

export namespace Pair { // tuple<string, string>: vars, params, claims
  export const FIRST: usize = 0;
  export const SECOND: usize = 8;
  export const SIZE: usize = 16;
}

export namespace Request {
  export const METHOD: usize = 0;
  export const URI: usize = 8;
  export const HEADERS: usize = 16;
  export const BODY: usize = 24;
  export const SIZE: usize = 36;
}

export namespace Response {
  export const STATUS: usize = 0;
  export const HEADERS: usize = 4;
  export const BODY: usize = 12;
  export const SIZE: usize = 24;
}

export namespace Context {
  export const ROUTE: usize = 0;
  export const CLIENT_IP: usize = 8;
  export const REQUEST_ID: usize = 16;
  export const IDENTITY: usize = 24; // option<identity>: tag @24, subject @28, claims @36
  export const PARAMS: usize = 44;
  export const VARS: usize = 52;
  export const SIZE: usize = 60;
}

// ---------------------------------------------------------------------------------------
// The allocator the host calls to place arguments (and the string `config()` returns)

/** `cabi_realloc(old_ptr, old_size, align, new_size) -> ptr`. The stub runtime hands out
 *  16-byte aligned blocks, enough for every alignment the canonical ABI asks for (≤ 8). */
export function cabi_realloc(oldPtr: usize, oldSize: usize, align: usize, newSize: usize): usize {
  if (align > 16) unreachable();
  if (oldPtr == 0) return heap.alloc(newSize);
  return heap.realloc(oldPtr, newSize);
}

/** The body of every `cabi_post_<export>` (post-return): called by the host after it has
 *  copied the export's results out, with the pointer the export returned. Releases every
 *  allocation since the module started: nothing is kept from one call to the next. */
export function releaseAll(): void {
  heap.reset();
}

// ---------------------------------------------------------------------------------------
// Return area: one static block, large enough for any result of this package's worlds
// (the largest is result<request, response>: 4 + 36 = 40 bytes).

const RET_AREA: usize = memory.data(64, 8);
// Where imports that return through memory (`config`) get their result written.
const IMPORT_RET: usize = memory.data(8, 4);

/** `result<request, response>` = ok(a copy of the request at `req`), body set to `none`
 *  ("keep the body as it was"). Returns the address of the request inside the result, so
 *  the caller can overwrite fields (e.g. with `HeaderList.storeAt(out + Request.HEADERS)`). */
export function okRequest(req: usize): usize {
  store<u8>(RET_AREA, 0);
  const out = RET_AREA + 4;
  memory.copy(out, req, Request.SIZE);
  store<u8>(out + Request.BODY, 0);
  return out;
}

/** A `response` = a copy of the one at `resp`, body set to `none` (keep the body). Returns
 *  its address, which is also what the export returns. */
export function copyResponse(resp: usize): usize {
  memory.copy(RET_AREA, resp, Response.SIZE);
  store<u8>(RET_AREA + Response.BODY, 0);
  return RET_AREA;
}

/** The pointer an export returning `result<_, string>` returns: ok(), or err(message). */
export function resultUnitOrString(error: string): usize {
  if (error.length == 0) {
    store<u8>(RET_AREA, 0);
  } else {
    store<u8>(RET_AREA, 1);
    lowerString(error, RET_AREA + 4);
  }
  return RET_AREA;
}

/** The pointer returned by every export that returns a result through memory. */
export function retArea(): usize {
  return RET_AREA;
}

// ---------------------------------------------------------------------------------------
// Strings and lists

/** Lifts the WIT string whose (ptr, len) is stored at `addr` into an AssemblyScript string
 *  (UTF-8 → UTF-16; allocates). */
export function liftString(addr: usize): string {
  return String.UTF8.decodeUnsafe(load<u32>(addr, Str.PTR), load<u32>(addr, Str.LEN));
}

/** Lowers `s` as a WIT string: encodes it as UTF-8 in new memory and stores (ptr, len) at
 *  `addr`. (The stub runtime never frees the buffer, which the host reads after we return.) */
export function lowerString(s: string, addr: usize): void {
  const bytes = utf8(s);
  store<u32>(addr, changetype<usize>(bytes), Str.PTR);
  store<u32>(addr, bytes.byteLength, Str.LEN);
}

/** UTF-8 for the host. AssemblyScript strings are UTF-16 and may hold lone surrogates
 *  (a JSON `\ud800` escape makes one); the default WTF-8 encoding would hand the host
 *  invalid UTF-8, which traps the call, so they become U+FFFD instead. */
export function utf8(s: string): ArrayBuffer {
  return String.UTF8.encode(s, false, String.UTF8.ErrorMode.REPLACE);
}

/** Whether the WIT string at `addr` equals `ascii` (an ASCII-only literal), without
 *  allocating. */
export function stringIs(addr: usize, ascii: string): bool {
  const len = <i32>load<u32>(addr, Str.LEN);
  if (len != ascii.length) return false;
  const ptr = <usize>load<u32>(addr, Str.PTR);
  for (let i = 0; i < len; i++) {
    if (<i32>load<u8>(ptr + i) != ascii.charCodeAt(i)) return false;
  }
  return true;
}

/** Number of elements of the list whose (ptr, len) is stored at `addr`. */
export function listLen(addr: usize): i32 {
  return <i32>load<u32>(addr, Str.LEN);
}

/** Address of element `i` of the list at `addr`, whose elements are `size` bytes. */
export function listElem(addr: usize, i: i32, size: usize): usize {
  return <usize>load<u32>(addr, Str.PTR) + <usize>i * size;
}

/** Looks `name` up in a list<tuple<string, string>> (ctx.vars, ctx.params) stored at
 *  `addr`; the value, or null. */
export function lookup(addr: usize, name: string): string | null {
  const n = listLen(addr);
  for (let i = 0; i < n; i++) {
    const pair = listElem(addr, i, Pair.SIZE);
    if (stringIs(pair + Pair.FIRST, name)) return liftString(pair + Pair.SECOND);
  }
  return null;
}

/** Builds a new list<header>. Copied entries keep pointing at the host's argument memory
 *  (16 bytes copied, no string copies); added ones are encoded into new memory. */
export class HeaderList {
  private base: usize;
  private count: i32 = 0;
  private capacity: i32;

  constructor(capacity: i32) {
    this.capacity = capacity;
    this.base = heap.alloc(<usize>capacity * Header.SIZE);
  }

  /** Copies every header of the list at `addr` except those named `skip` (lower-case). */
  copyFrom(addr: usize, skip: string = ""): void {
    const n = listLen(addr);
    for (let i = 0; i < n; i++) {
      const h = listElem(addr, i, Header.SIZE);
      if (skip.length > 0 && stringIs(h + Header.NAME, skip)) continue;
      this.slot();
      memory.copy(this.base + <usize>(this.count - 1) * Header.SIZE, h, Header.SIZE);
    }
  }

  /** Appends `name: value`. `name` must be a lower-case token; `value` must not contain
   *  CR, LF or NUL (the host refuses the stage's output otherwise). */
  add(name: string, value: string): void {
    const h = this.slot();
    lowerString(name, h + Header.NAME);
    lowerString(value, h + Header.VALUE);
  }

  /** Stores the list's (ptr, len) at `addr`, e.g. the `headers` field of a record. */
  storeAt(addr: usize): void {
    store<u32>(addr, this.base, Str.PTR);
    store<u32>(addr, this.count, Str.LEN);
  }

  private slot(): usize {
    if (this.count == this.capacity) unreachable(); // sized by the caller
    this.count++;
    return this.base + <usize>(this.count - 1) * Header.SIZE;
  }
}

// ---------------------------------------------------------------------------------------
// Host imports (`import host;`), with their lowered signatures

// @ts-ignore: decorator
@external("wasmgate:plugin/host@0.1.0", "log")
declare function host_log(level: i32, ptr: usize, len: usize): void;
// @ts-ignore: decorator
@external("wasmgate:plugin/host@0.1.0", "config")
declare function host_config(ret: usize): void;
// @ts-ignore: decorator
@external("wasmgate:plugin/host@0.1.0", "now-millis")
declare function host_now_millis(): u64;
// @ts-ignore: decorator
@external("wasmgate:plugin/host@0.1.0", "set-var")
declare function host_set_var(namePtr: usize, nameLen: usize, valuePtr: usize, valueLen: usize): void;

/** `enum level`: lowered as its case index. */
export enum Level { Trace = 0, Debug = 1, Info = 2, Warn = 3, Error = 4 }

/** `host.log(level, message)`. */
export function log(level: Level, message: string): void {
  const bytes = utf8(message);
  host_log(level, changetype<usize>(bytes), bytes.byteLength);
}

/** `host.config()`: the stage's config as JSON. The host allocates the string through
 *  `cabi_realloc` and stores its (ptr, len) in the 8 bytes we pass. */
export function config(): string {
  host_config(IMPORT_RET);
  return liftString(IMPORT_RET);
}

/** `host.now-millis()`: milliseconds since the Unix epoch. */
export function nowMillis(): u64 {
  return host_now_millis();
}

/** `host.set-var(name, value)`: names ≤ 64 bytes, values ≤ 4 KiB (more traps). */
export function setVar(name: string, value: string): void {
  const n = utf8(name);
  const v = utf8(value);
  host_set_var(changetype<usize>(n), n.byteLength, changetype<usize>(v), v.byteLength);
}
