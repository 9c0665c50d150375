package plan

import (
	"context"
	"sync"

	"github.com/segpilot/segpilot/shared/segment"
)

const (
	// blockRecords is how many records emit hands to the encoder at a time:
	// large enough to make channel traffic negligible, small enough that the
	// records in flight (with their maps) stay a few MB.
	blockRecords = 1024
	// blocksInFlight bounds the records queued between reader and encoder.
	blocksInFlight = 4
	// chunkBytes caps a chunk's arena whatever ChunkRecords says, so a few
	// huge profiles cannot blow the memory budget (and offsets fit uint32).
	// Small chunks also sort in cache; 4 MiB measured fastest.
	chunkBytes = 4 << 20
)

// spiller is phase one, a three-stage pipeline so reading, encoding and
// sorting use both cores:
//
//	emit (the Source's goroutine) -> blocks -> encoder -> full chunks -> sorter -> spill files
//
// Exactly two chunks exist, so memory stays flat however long the input.
// The first error cancels ctx; context.Cause reports it.
type spiller struct {
	ctx          context.Context
	cancel       context.CancelCauseFunc
	dir          string
	chunkRecords int

	block      []segment.Record // filled by emit
	blocks     chan []segment.Record
	freeBlocks chan []segment.Record
	full       chan *chunk
	free       chan *chunk
	wg         sync.WaitGroup

	out spilled // written by the sorter, read after wg.Wait
}

func newSpiller(ctx context.Context, dir string, chunkRecords int) *spiller {
	ctx, cancel := context.WithCancelCause(ctx)
	s := &spiller{
		ctx:          ctx,
		cancel:       cancel,
		dir:          dir,
		chunkRecords: chunkRecords,
		block:        make([]segment.Record, 0, blockRecords),
		blocks:       make(chan []segment.Record, blocksInFlight),
		freeBlocks:   make(chan []segment.Record, blocksInFlight+2),
		full:         make(chan *chunk),
		free:         make(chan *chunk, 2),
	}
	s.free <- &chunk{}
	s.free <- &chunk{}
	s.wg.Add(2)
	go s.encode()
	go s.sortAndSpill()
	return s
}

// emit queues one record. The Source must not modify r.Profile.Custom after
// emitting it: the record is encoded on another goroutine.
func (s *spiller) emit(r segment.Record) error {
	s.block = append(s.block, r)
	if len(s.block) < blockRecords {
		return nil
	}
	return s.sendBlock()
}

func (s *spiller) sendBlock() error {
	if s.ctx.Err() != nil {
		return context.Cause(s.ctx)
	}
	select {
	case s.blocks <- s.block:
	case <-s.ctx.Done():
		return context.Cause(s.ctx)
	}
	select {
	case b := <-s.freeBlocks:
		s.block = b
	default:
		s.block = make([]segment.Record, 0, blockRecords)
	}
	return nil
}

// finish waits for the pipeline and returns the spilled runs. With abort set
// (the Source failed) it only stops the goroutines.
func (s *spiller) finish(abort bool) (*spilled, error) {
	var err error
	if abort {
		s.cancel(context.Canceled)
	} else if len(s.block) > 0 {
		err = s.sendBlock()
	}
	close(s.blocks)
	s.wg.Wait()
	if err == nil && s.ctx.Err() != nil {
		err = context.Cause(s.ctx)
	}
	s.cancel(nil)
	if err != nil {
		return nil, err
	}
	return &s.out, nil
}

func (s *spiller) encode() {
	defer s.wg.Done()
	defer close(s.full)
	var enc encoder
	c := <-s.free
	for b := range s.blocks {
		if s.ctx.Err() != nil {
			continue // drain so emit never blocks on a dead pipeline
		}
		for i := range b {
			if err := c.add(&enc, &b[i]); err != nil {
				s.cancel(err)
				break
			}
			if len(c.entries) >= s.chunkRecords || len(c.arena) >= chunkBytes {
				if c = s.handOff(c); c == nil {
					break
				}
			}
		}
		clear(b) // drop references to the records' strings and maps
		select {
		case s.freeBlocks <- b[:0]:
		default:
		}
	}
	if s.ctx.Err() == nil && len(c.entries) > 0 {
		c.last = true
		s.handOff(c)
	}
}

// handOff passes a full chunk to the sorter and returns an empty one, or nil
// when the pipeline was cancelled.
func (s *spiller) handOff(c *chunk) *chunk {
	last := c.last // c belongs to the sorter once sent
	select {
	case s.full <- c:
	case <-s.ctx.Done():
		return nil
	}
	if last {
		return nil
	}
	select {
	case c = <-s.free:
		return c
	case <-s.ctx.Done():
		return nil
	}
}

func (s *spiller) sortAndSpill() {
	defer s.wg.Done()
	for c := range s.full {
		if s.ctx.Err() != nil {
			continue
		}
		c.sort()
		if c.last {
			s.out.mem = c
			continue
		}
		path, err := c.spill(s.dir)
		if err != nil {
			s.cancel(err)
			continue
		}
		s.out.files = append(s.out.files, path)
		c.reset()
		s.free <- c
	}
}
