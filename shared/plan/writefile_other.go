//go:build !unix

package plan

import "os"

// writeFile writes a batch file; see writefile_unix.go.
func writeFile(path string, data []byte) error {
	return os.WriteFile(path, data, 0o600)
}
