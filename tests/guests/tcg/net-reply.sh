#!/bin/sh
# net-reply: run by `nc -l -e` in net-listen.sh with the connection on stdin/stdout:
# read one line, keep it in /tmp/received, answer with it.
read -r line
echo "$line" > /tmp/received
echo "guest heard: $line"
