// Package segpilot holds template.yaml, the SAM template that deploys
// segpilot, so that the local runner enforces the very function timeouts
// Lambda enforces (see shared/runner.FunctionTimeouts).
package segpilot

import _ "embed"

// Template is template.yaml.
//
//go:embed template.yaml
var Template []byte
