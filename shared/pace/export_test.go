package pace

import (
	"context"
	"time"
)

// SetSleep replaces the limiter's sleep (tests stall the process with it).
func (l *Limiter) SetSleep(sleep func(ctx context.Context, d time.Duration) error) { l.sleep = sleep }

// SetNow replaces the limiter's clock for its adaptation.
func (l *Limiter) SetNow(now func() time.Time) { l.now = now }
