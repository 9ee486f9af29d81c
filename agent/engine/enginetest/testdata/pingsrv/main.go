// Command pingsrv is the program inside pullship's test images. With no
// arguments it waits (as PID 1, exiting promptly on SIGTERM); subcommands are
// run through exec: "ping" prints pong, "exit N" exits with N, "spew N" prints
// N bytes, "sleep" sleeps for a minute.
package main

import (
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
		fmt.Println("pingsrv up")
		<-c
		return
	}
	switch os.Args[1] {
	case "ping":
		fmt.Println("pong")
	case "exit":
		n, _ := strconv.Atoi(os.Args[2])
		fmt.Fprintln(os.Stderr, "exiting with", n)
		os.Exit(n)
	case "spew":
		n, _ := strconv.Atoi(os.Args[2])
		os.Stdout.Write(bytes.Repeat([]byte("x"), n))
	case "sleep":
		time.Sleep(time.Minute)
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}
