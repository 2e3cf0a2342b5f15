package netlimit

import "net/http"

// NewServer returns an *http.Server serving h within l (its zero fields
// take the defaults): read-header, read and idle timeouts, MaxHeaderBytes,
// and every request body bounded by MaxBodyBytes (413 when a declared
// length is over it; a handler reading past it gets an
// *http.MaxBytesError). Serve it on a Listener of the same Limits: the
// Listener bounds connections and holds the write progress deadline.
//
// The server's own WriteTimeout stays off: it is a deadline for the whole
// response (and, over HTTP/2, resets a stream when it passes), which would
// cut the long downloads that the progress deadline lets through.
func NewServer(h http.Handler, l Limits) *http.Server {
	l = l.WithDefaults()
	return &http.Server{
		Handler:           guard{h: h, maxBody: l.MaxBodyBytes},
		ReadHeaderTimeout: max(l.ReadHeaderTimeout, 0),
		ReadTimeout:       max(l.ReadTimeout, 0),
		IdleTimeout:       max(l.IdleTimeout, 0),
		MaxHeaderBytes:    max(l.MaxHeaderBytes, 0),
	}
}

// guard bounds the request body. (ReadTimeout's deadline does not outlive
// the body: net/http lifts it when the body has been read, so a download
// or a backup that takes longer keeps its request's context.)
type guard struct {
	h       http.Handler
	maxBody int64
}

func (g guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.maxBody > 0 && r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength > g.maxBody {
			w.Header().Set("Connection", "close")
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, g.maxBody)
	}
	g.h.ServeHTTP(w, r)
}
