//go:build !unix

package filelock

import "os"

// Without flock, nothing excludes another process: local mode on such
// systems must not share a bucket folder between processes.
func lock(*os.File, bool) error { return nil }
