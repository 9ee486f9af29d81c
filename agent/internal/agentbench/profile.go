package main

import "errors"

func (b *bench) profile(agentToml string) error { return errors.New("profile: not yet") }
