package testutil

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// NeedTool returns the path of the program name, found on PATH. When it is
// missing, the test fails in CI (CI=true in the environment), because a
// skipped check there would pass unseen; elsewhere it skips with a message
// starting "WARNING:". Both name the tool and how to install it.
func NeedTool(t testing.TB, name, installHint string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	MissingTool(t, name, installHint)
	return ""
}

// MissingTool reports a required tool as missing, as NeedTool does, for
// tests that look for it in more places than PATH.
func MissingTool(t testing.TB, name, installHint string) {
	t.Helper()
	missingTool(t, inCI(), name, installHint)
}

func inCI() bool {
	ci, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && ci
}

func missingTool(t testing.TB, ci bool, name, installHint string) {
	t.Helper()
	if ci {
		t.Fatalf("%s is not installed, and CI must run this test: install it with %s", name, installHint)
		return
	}
	t.Skipf("WARNING: %s is not installed, so this test did NOT run: install it with %s (with CI=true this is a failure)", name, installHint)
}
