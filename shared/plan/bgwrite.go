package plan

import "io"

// backgroundWriter hands what it is given to a goroutine that writes it to
// w, so the merge does not wait on the file system. A write error shows at
// close, which must be called.
type backgroundWriter struct {
	bufs   chan []byte
	free   chan []byte
	done   chan struct{}
	err    error // the first write error; read after done
	closed bool
}

func newBackgroundWriter(w io.Writer, size int) *backgroundWriter {
	const buffers = 3
	b := &backgroundWriter{bufs: make(chan []byte, buffers), free: make(chan []byte, buffers), done: make(chan struct{})}
	for range buffers {
		b.free <- make([]byte, 0, size)
	}
	go func() {
		defer close(b.done)
		for buf := range b.bufs {
			if b.err == nil {
				_, b.err = w.Write(buf)
			}
			b.free <- buf
		}
	}()
	return b
}

// Write copies p for the goroutine; it waits only when every buffer is in
// flight.
func (b *backgroundWriter) Write(p []byte) (int, error) {
	buf := <-b.free
	b.bufs <- append(buf[:0], p...)
	return len(p), nil
}

// close waits for every write and returns the first error.
func (b *backgroundWriter) close() error {
	if !b.closed {
		b.closed = true
		close(b.bufs)
	}
	<-b.done
	return b.err
}
