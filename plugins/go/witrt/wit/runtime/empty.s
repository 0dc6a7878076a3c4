// Lets //go:wasmimport declarations without bodies compile for the host target.
