package schemas

import (
	"bytes"
	"encoding/json"
	"sync"

	"github.com/cockroachdb/errors"
)

// replyWriter is a buffer with an encoder writing into it, kept in
// replyWriters between replies.
type replyWriter struct {
	buf bytes.Buffer
	enc *json.Encoder
}

// replyWriters are the reusable buffers of WithResultReply. A buffer that
// grew past maxPooledReply is dropped instead of kept, so one large result
// does not keep its memory.
var replyWriters = sync.Pool{New: func() any {
	w := &replyWriter{}
	w.enc = json.NewEncoder(&w.buf) // escapes HTML, as json.Marshal does
	return w
}}

const maxPooledReply = 64 << 10

// WithResultReply calls send with the Reply of result, byte for byte what
// ResultReply returns, written into a reused buffer: the bytes are valid
// only until send returns (a NATS publish copies them before it
// returns). It spares every answer the copies ResultReply makes.
func WithResultReply(result any, send func([]byte) error) error {
	w := replyWriters.Get().(*replyWriter)
	defer func() {
		if w.buf.Cap() <= maxPooledReply {
			replyWriters.Put(w)
		}
	}()
	w.buf.Reset()
	w.buf.WriteString(resultPrefix)
	if err := w.enc.Encode(result); err != nil {
		return errors.Wrap(err, "encoding result")
	}
	b := w.buf.Bytes()
	b = append(b[:len(b)-1], resultSuffix...) // Encode ends the value with a newline
	return send(b)
}
