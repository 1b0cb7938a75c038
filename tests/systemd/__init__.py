"""The systemd unit and the sd_notify client, against real sockets and systemd-analyze."""
