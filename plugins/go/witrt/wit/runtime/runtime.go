// Package runtime is the memory side of the canonical ABI for Go components built
// with stock Go (GOOS=wasip1, -buildmode=c-shared, //go:wasmexport): the
// allocations the generated bindings make, and the module's `cabi_realloc`
// export, through which the host (and the WASI adapter) write into guest memory.
//
// It replaces go.bytecodealliance.org/pkg/wit/runtime v0.4.0 with the same API.
// The one difference is how `cabi_realloc` serves calls made before the Go heap
// exists: the upstream package links to `runtime.sbrk`, which the Go 1.27 linker
// refuses (`//go:linkname` to a runtime internal), so this one hands out memory
// from a static arena instead.
package runtime

import (
	"runtime"
	"unsafe"
)

// Handle is an owned or borrowed resource handle; 0 means none.
type Handle struct {
	value int32
}

// Use returns the handle, which must be set.
func (h *Handle) Use() int32 {
	if h.value == 0 {
		panic("nil handle")
	}
	return h.value
}

// Take returns the handle and clears it.
func (h *Handle) Take() int32 {
	if h.value == 0 {
		panic("nil handle")
	}
	value := h.value
	h.value = 0
	return value
}

// Set stores a handle into an empty Handle.
func (h *Handle) Set(value int32) {
	if value == 0 {
		panic("nil handle")
	}
	if h.value != 0 {
		panic("handle already set")
	}
	h.value = value
}

// TakeOrNil returns the handle, or 0, and clears it.
func (h *Handle) TakeOrNil() int32 {
	value := h.value
	h.value = 0
	return value
}

// MakeHandle wraps a handle the host returned.
func MakeHandle(value int32) *Handle {
	if value == 0 {
		panic("nil handle")
	}
	return &Handle{value}
}

// Allocate returns size bytes of zeroed Go memory aligned to align, pinned by
// pinner so that the garbage collector leaves it alone while only the host (or
// canonical-ABI code) refers to it.
func Allocate(pinner *runtime.Pinner, size, align uintptr) unsafe.Pointer {
	pointer := allocateRaw(size, align)
	pinner.Pin(pointer)
	return pointer
}

func allocateRaw(size, align uintptr) unsafe.Pointer {
	if size == 0 {
		return nil
	}
	size = roundUp(size, align)
	switch align {
	case 1:
		return unsafe.Pointer(unsafe.SliceData(make([]uint8, size)))
	case 2:
		return unsafe.Pointer(unsafe.SliceData(make([]uint16, size/2)))
	case 4:
		return unsafe.Pointer(unsafe.SliceData(make([]uint32, size/4)))
	case 8:
		return unsafe.Pointer(unsafe.SliceData(make([]uint64, size/8)))
	default:
		panic("cabi_realloc: unsupported alignment") // the canonical ABI uses 1, 2, 4 and 8
	}
}

func roundUp(n, align uintptr) uintptr {
	return (n + align - 1) &^ (align - 1)
}

// pinner pins what cabi_realloc hands out until the next export call starts
// (the generated export wrappers call Unpin once they hold the arguments as Go
// values, which keep the memory alive from then on).
var pinner = runtime.Pinner{}

// Unpin releases every allocation cabi_realloc has made so far.
func Unpin() {
	pinner.Unpin()
}

// === Allocations before the Go runtime is up ===
//
// The WASI preview-1 adapter allocates its state (a 64 KiB struct plus its own
// stack) through the main module's cabi_realloc the first time the module calls
// a WASI function, and the Go runtime makes such calls (clock, random) while it
// initialises, before the GC heap can be used. Those allocations come from this
// arena, which lives in zero-initialised data (it costs no bytes in the module,
// only linear memory). 64 KiB is too small; 256 KiB leaves room.

const arenaSize = 256 << 10

var (
	arena     [arenaSize / 8]uint64 // uint64 for 8-byte alignment
	arenaUsed uintptr
	heapReady bool
)

func init() {
	// Package initialisers run after the runtime's own: from here on, the Go
	// heap serves every allocation.
	heapReady = true
}

// arenaAllocate bumps a pointer through the arena. It must not allocate, grow
// the stack much, or panic: the runtime is not there to help. Out of arena
// space it returns nil, which makes the caller trap.
func arenaAllocate(size, align uintptr) unsafe.Pointer {
	base := uintptr(unsafe.Pointer(&arena[0]))
	start := roundUp(base+arenaUsed, align) - base
	if size > arenaSize || start > arenaSize-size {
		return nil
	}
	arenaUsed = start + size
	return unsafe.Add(unsafe.Pointer(&arena[0]), start)
}

// adapterMonotonicClockSetPaused tells the WASI adapter to answer clock reads
// from a cached value. The garbage collector reads the monotonic clock, and the
// component model forbids calling imports from inside cabi_realloc, so a GC
// triggered by an allocation here would otherwise trap.
//
//go:wasmimport wasi_snapshot_preview1 adapter_monotonic_clock_set_paused
func adapterMonotonicClockSetPaused(paused bool)

//go:wasmexport cabi_realloc
func cabiRealloc(oldPointer unsafe.Pointer, oldSize, align, newSize uintptr) unsafe.Pointer {
	if oldPointer != nil && newSize <= oldSize {
		return oldPointer
	}
	var pointer unsafe.Pointer
	if heapReady {
		adapterMonotonicClockSetPaused(true)
		pointer = Allocate(&pinner, newSize, align)
		adapterMonotonicClockSetPaused(false)
	} else {
		pointer = arenaAllocate(newSize, align)
	}
	if oldPointer != nil && oldSize > 0 && pointer != nil {
		copy(unsafe.Slice((*byte)(pointer), oldSize), unsafe.Slice((*byte)(oldPointer), oldSize))
	}
	return pointer
}
