// A local stand-in for the module that `wit-bindgen go` 0.63.0 bindings import
// (go.bytecodealliance.org/pkg v0.4.0). The real one is served by the Go module
// proxy, which is unreachable from the project's build machines; a plugin's
// build points its generated go.mod here with a `replace` directive. It holds
// only what synchronous worlds need: wit/runtime and wit/types.
module go.bytecodealliance.org/pkg

go 1.24
