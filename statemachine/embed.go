// Package statemachine embeds the ASL definition that template.yaml deploys,
// so the local runner executes the very same file.
package statemachine

import _ "embed"

// Export is statemachine/export.asl.json.
//
//go:embed export.asl.json
var Export []byte
