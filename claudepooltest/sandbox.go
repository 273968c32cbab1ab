package claudepooltest

import "os"

// Sandbox starts a [Server] with cfg and makes a HOME directory of its
// own for the CLI, so that a program can run the real CLI against the
// mock without touching the login and settings of the user who runs it.
// env is [Server.Env] with that HOME. stop closes the server and removes
// the HOME; call it once the CLI processes are gone.
func Sandbox(cfg Config) (env []string, stop func(), err error) {
	home, err := os.MkdirTemp("", "claudepooltest-home-")
	if err != nil {
		return nil, nil, err
	}
	srv := NewServer(cfg)
	stop = func() {
		srv.Close()
		_ = os.RemoveAll(home)
	}
	return append(srv.Env(), "HOME="+home), stop, nil
}
