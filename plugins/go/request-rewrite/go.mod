// The plugin's own code. Package rewrite is the pure logic (no WebAssembly, no
// bindings: `go test ./...` runs it natively); export_wit_world and
// export_wasmgate_plugin_config_check are the glue that build.sh copies into the
// generated bindings (they only build for GOOS=wasip1).
module wasmgate.local/request-rewrite

go 1.24
