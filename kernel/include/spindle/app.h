// The entry point of a Spindle app. The same app source runs on every
// target: hosted, its arguments are the command line left after the
// runtime's own flags (--cpus, --timeslice); on bare metal argc is 1.
// Its return value is the app's exit status (hosted: the process's; QEMU:
// the semihosting exit code).
#pragma once

int spindle_main(int argc, char** argv);
