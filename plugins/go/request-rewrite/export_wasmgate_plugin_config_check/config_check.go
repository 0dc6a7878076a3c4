//go:build wasip1

// Package export_wasmgate_plugin_config_check implements the config-check
// interface every world exports; build.sh copies it into the generated bindings.
package export_wasmgate_plugin_config_check

import (
	witTypes "go.bytecodealliance.org/pkg/wit/types"

	"wasmgate.local/request-rewrite/rewrite"
)

// ValidateConfig runs once per stage when the gateway loads the config; the
// error text is what `wasmgate check` prints.
func ValidateConfig(config string) witTypes.Result[witTypes.Unit, string] {
	if err := rewrite.Validate(config); err != nil {
		return witTypes.Err[witTypes.Unit](err.Error())
	}
	return witTypes.Ok[witTypes.Unit, string](witTypes.Unit{})
}
