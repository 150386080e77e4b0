#!/bin/sh
# START entry of the interop tests: records whether the services were already listening
# (the LMTP unix socket exists) when START ran. Usage: start-probe.sh OUTFILE LMTP_SOCKET
if [ -e "$2" ]; then
	echo "services-already-listening" > "$1"
else
	echo "before-services" > "$1"
fi
