package run

import (
	"fmt"
	"strconv"

	"github.com/segpilot/segpilot/shared/plan"
)

// The bucket layout (README, "The run report"; docs/design.md, "The life
// of a run").
//
//	config/exports.yaml
//	segments/<segment>/<file>                     input
//	kicks/<export>                                a run ended: drain the export's queue
//	state/<export>/state.json                     epoch, holder, snapshot, latest file
//	state/<export>/queue/<arrival>-<id>.json      deliveries waiting their turn
//	runs/<export>/<run>/report.json, report.html  the run's latest outcome
//	runs/<export>/<run>/deliveries/<entry>.json   what became of each delivery
//	runs/<export>/<run>/plans/<base>/             the run planned against snapshot <base>
//	runs/<export>/<run>/attempts/<n>/             attempt n: its record, results, report

// ConfigKey is where the bucket keeps the config.
const ConfigKey = "config/exports.yaml"

// KicksPrefix is where finalize writes kicks/<export> when a run ends; its
// S3 event invokes ingest, which drains the export's queue.
const KicksPrefix = "kicks/"

func kickKey(export string) string { return KicksPrefix + export }

func stateKey(export string) string    { return "state/" + export + "/state.json" }
func queuePrefix(export string) string { return "state/" + export + "/queue/" }

// legacySnapshotKey is where segpilot kept an export's snapshot before
// state.json pointed at it: read as the base until a run promotes one.
func legacySnapshotKey(export string) string { return "state/" + export + "/snapshot" }

func runPrefix(export, runID string) string    { return "runs/" + export + "/" + runID + "/" }
func runReportKey(export, runID string) string { return runPrefix(export, runID) + "report.json" }
func runPageKey(export, runID string) string   { return runPrefix(export, runID) + "report.html" }

// decisionRejectedKey lists the rows of a run that ended before any
// attempt (the key refused): runs/<export>/<run>/rejected.csv.
func decisionRejectedKey(export, runID string) string {
	return runPrefix(export, runID) + "rejected.csv"
}
func deliveryKey(export, runID, entry string) string {
	return runPrefix(export, runID) + "deliveries/" + entry
}

// A plan's objects: runs/<export>/<run>/plans/<base>/.
func planPrefix(export, runID, base string) string {
	return runPrefix(export, runID) + "plans/" + base + "/"
}
func manifestKey(export, runID, base string) string {
	return planPrefix(export, runID, base) + "manifest.json"
}
func itemsKey(export, runID, base string) string {
	return planPrefix(export, runID, base) + "items.json"
}
func batchesKey(export, runID, base string) string {
	return planPrefix(export, runID, base) + plan.BatchesFile
}
func plannedSnapshotKey(export, runID, base string) string {
	return planPrefix(export, runID, base) + "snapshot"
}
func inputRejectedKey(export, runID, base string) string {
	return planPrefix(export, runID, base) + "input-rejected.csv"
}

// An attempt's objects: runs/<export>/<run>/attempts/<n>/.
func attemptPrefix(export, runID string, n int64) string {
	return runPrefix(export, runID) + "attempts/" + strconv.FormatInt(n, 10) + "/"
}
func attemptKey(export, runID string, n int64) string {
	return attemptPrefix(export, runID, n) + "attempt.json"
}
func attemptReportKey(export, runID string, n int64) string {
	return attemptPrefix(export, runID, n) + "report.json"
}
func resultKey(export, runID string, n int64, seq int) string {
	return fmt.Sprintf("%sresults/%06d.json", attemptPrefix(export, runID, n), seq)
}
func progressKey(export, runID string, n int64, seq int) string {
	return fmt.Sprintf("%sprogress/%06d.json", attemptPrefix(export, runID, n), seq)
}
func failureKey(export, runID string, n int64, seq int) string {
	return fmt.Sprintf("%sfailures/%06d.json", attemptPrefix(export, runID, n), seq)
}
func refusalKey(export, runID string, n int64) string {
	return attemptPrefix(export, runID, n) + "refused.json"
}
func stoppedKey(export, runID string, n int64) string {
	return attemptPrefix(export, runID, n) + "stopped.json"
}
func relistedKey(export, runID string, n int64) string {
	return attemptPrefix(export, runID, n) + "relisted.json"
}
func throttledKey(export, runID string, n int64) string {
	return attemptPrefix(export, runID, n) + "throttled"
}
func mapResultsPrefix(export, runID string, n int64) string {
	return attemptPrefix(export, runID, n) + "map"
}
func rejectedKey(export, runID string, n int64) string {
	return attemptPrefix(export, runID, n) + "rejected.csv"
}

// promotedKey is the snapshot an attempt leaves: what the destination
// holds after it, row by row.
func promotedKey(export, runID string, n int64) string {
	return attemptPrefix(export, runID, n) + "snapshot"
}

// executionName names attempt n of a run: unique per export for ever,
// since attempts are numbered by the export's epoch.
func executionName(runID string, n int64) string { return runID + "-" + strconv.FormatInt(n, 10) }
