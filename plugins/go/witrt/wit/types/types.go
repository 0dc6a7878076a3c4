// Package wit_types holds the generic types the generated bindings use for WIT's
// option, result, tuple and unit. It replaces go.bytecodealliance.org/pkg/wit/types
// v0.4.0 with the same API, minus stream, future and tuples longer than 4.
package wit_types

// Unit is WIT's `_` in `result<_, E>`.
type Unit struct{}

// Option tags.
const (
	OptionNone = 0
	OptionSome = 1
)

// Option is WIT's `option<T>`.
type Option[T any] struct {
	tag   uint8
	value T
}

// None returns an empty Option.
func None[T any]() Option[T] { return Option[T]{} }

// Some returns an Option holding value.
func Some[T any](value T) Option[T] { return Option[T]{OptionSome, value} }

// Tag is OptionNone or OptionSome.
func (o Option[T]) Tag() uint8 { return o.tag }

// IsSome reports whether the Option holds a value.
func (o Option[T]) IsSome() bool { return o.tag == OptionSome }

// IsNone reports whether the Option is empty.
func (o Option[T]) IsNone() bool { return o.tag == OptionNone }

// Some returns the value; it panics on an empty Option.
func (o Option[T]) Some() T {
	if o.tag != OptionSome {
		panic("tag mismatch")
	}
	return o.value
}

// SomeOr returns the value, or fallback for an empty Option.
func (o Option[T]) SomeOr(fallback T) T {
	if o.tag != OptionSome {
		return fallback
	}
	return o.value
}

// Result tags.
const (
	ResultOk  = 0
	ResultErr = 1
)

// Result is WIT's `result<T, U>`.
type Result[T any, U any] struct {
	tag   uint8
	value any
}

// Ok returns a successful Result.
func Ok[T any, U any](value T) Result[T, U] { return Result[T, U]{ResultOk, value} }

// Err returns a failed Result.
func Err[T any, U any](value U) Result[T, U] { return Result[T, U]{ResultErr, value} }

// Tag is ResultOk or ResultErr.
func (r Result[T, U]) Tag() uint8 { return r.tag }

// IsOk reports whether the Result is a success.
func (r Result[T, U]) IsOk() bool { return r.tag == ResultOk }

// IsErr reports whether the Result is a failure.
func (r Result[T, U]) IsErr() bool { return r.tag == ResultErr }

// Ok returns the success value; it panics on a failure.
func (r Result[T, U]) Ok() T {
	if r.tag != ResultOk {
		panic("tag mismatch")
	}
	return r.value.(T)
}

// Err returns the failure value; it panics on a success.
func (r Result[T, U]) Err() U {
	if r.tag != ResultErr {
		panic("tag mismatch")
	}
	return r.value.(U)
}

// Tuple1 is WIT's `tuple<T0>`.
type Tuple1[T0 any] struct {
	F0 T0
}

// Tuple2 is WIT's `tuple<T0, T1>` (a header is a Tuple2[string, []uint8]).
type Tuple2[T0 any, T1 any] struct {
	F0 T0
	F1 T1
}

// Tuple3 is WIT's `tuple<T0, T1, T2>`.
type Tuple3[T0 any, T1 any, T2 any] struct {
	F0 T0
	F1 T1
	F2 T2
}

// Tuple4 is WIT's `tuple<T0, T1, T2, T3>`.
type Tuple4[T0 any, T1 any, T2 any, T3 any] struct {
	F0 T0
	F1 T1
	F2 T2
	F3 T3
}
