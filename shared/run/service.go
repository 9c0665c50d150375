package run

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/pace"
	"github.com/segpilot/segpilot/shared/store"
)

// Starter starts one workflow execution per attempt. Starting a name that
// exists already reports started=false and no error (Step Functions'
// ExecutionAlreadyExists, or its success for the same name and input while
// that execution runs): that is what lets any drainer start an attempt
// whose own start may have been lost.
type Starter interface {
	StartRun(ctx context.Context, name string, input []byte) (started bool, err error)
}

// Liveness tells where an attempt's execution is: Step Functions'
// DescribeExecution in AWS; locally, the runner's record of the execution
// and the process that claimed it.
type Liveness interface {
	Attempt(ctx context.Context, h Holder) (Live, error)
}

// LiveState is where an attempt's execution is.
type LiveState int

const (
	LiveUnknown    LiveState = iota // cannot be told (an error, another host): wait
	LiveRunning                     // running, or about to start in the process that claimed it
	LiveNotStarted                  // no such execution (AWS): its start was lost or is still to come
	LiveEnded                       // succeeded, failed, timed out, stopped; or its process died
)

// Live is an attempt's liveness. EndedAt is when it ended (LiveEnded),
// by the clock of whatever ran it (Step Functions' stop date).
type Live struct {
	State   LiveState
	EndedAt time.Time
}

// Kicker wakes whoever drains an export's queue once a run ended (AWS: a
// PUT of kicks/<export>, whose S3 event invokes ingest). Nil: nobody
// (locally the CLI waiting on the queue drains it).
type Kicker interface {
	Kick(ctx context.Context, export string) error
}

// Destination is where a batch goes: the destination port (shared/dest),
// which every adapter (Autopilot, Ortto) implements.
type Destination = dest.Destination

// Connector returns a destination for one batch, paced at share: this
// worker's part of the connection's budget (Lambda); local mode may ignore
// it and pace every worker with one shared limiter instead.
type Connector func(ctx context.Context, conn config.Connection, share Share) (Destination, error)

// Share is a worker's part of a connection's budget: RPS requests a
// second (0: the whole budget), paced together with the run's other
// workers through Signal, the run's throttle object (nil: alone). A
// Relay share takes over from a worker that just ended (the Map starts
// it as another child ends), whose last request went a round trip or
// more before the group Began: its own first goes an interval after that
// (pace.Limiter.TakeOver), not at once (a warm container's idle limiter
// would send at once, the next child's cold one at a random phase: near
// a run's end, where the groups are small, the shares sent 4-8 % over
// their budget and met a stray 429). Workers and Groups are the run's
// concurrency and its groups (0: not known): the shares still sending
// once fewer groups are left than workers take the finished ones' budget
// (pace.Limiter.Spread).
type Share struct {
	RPS     float64
	Signal  pace.Signal
	Relay   bool
	Began   time.Time
	Workers int
	Groups  int
}

// Service runs segpilot's pipeline steps against its ports.
type Service struct {
	Store    store.ObjectStore
	Starter  Starter
	Liveness Liveness
	Kicker   Kicker
	Connect  Connector
	Log      *slog.Logger
	TempDir  string           // plan work space (Lambda: /tmp); default os.TempDir()
	Now      func() time.Time // default time.Now

	// Owner names whoever claims an attempt through this Service, as the
	// holder records it: the process in local mode (Liveness reads it
	// back); a container id in Lambda.
	Owner string

	// EndedGrace is how long after its execution ended an attempt is left
	// alone before a drainer closes it: stopping a Step Functions execution
	// does not stop the Lambda invocations it has in flight (syncbatch runs
	// up to 300 s, finalize 900 s), and an older upsert must not land
	// after a newer run's. Zero locally: a dead process sends nothing.
	EndedGrace time.Duration

	// Words says what to do in this deployment's words; default: Lambda's.
	Words Words

	// Page renders a report as report.html, written next to the run's
	// report.json (runpage.Render: run cannot import it, since it renders
	// run's types); nil writes no page.
	Page func(*Report) ([]byte, error)

	// Metrics, when set, receives each attempt's and decision's outcome as
	// CloudWatch Embedded Metric Format, one line each (Lambda: stdout,
	// which CloudWatch Logs reads); nil: none.
	Metrics io.Writer

	// Transient tells an infrastructure error worth retrying later (an
	// SDK's throttling, 5xx, a dropped connection; awsx.IsTransient in
	// Lambda) from one that is not; nil: none is. A StartExecution error it
	// calls transient may have started the execution.
	Transient func(error) bool

	manifestMu sync.Mutex
	manifests  map[string]*Manifest // manifest key -> its head, see readManifestHead

	existingSets existingCache // see existing
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// Logger is the service's logger, never nil.
func (s *Service) Logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (s *Service) words() Words {
	if s.Words != nil {
		return s.Words
	}
	return LambdaWords{}
}

func (s *Service) transient(err error) bool { return s.Transient != nil && s.Transient(err) }
