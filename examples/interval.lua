-- Interval listener: the handler runs in a worker every 2 seconds.
--   moonbridge examples/interval.lua
listen{
  { proto = "interval", name = "heartbeat", delay = 2, strict = true },
  min_fork = 1, pre_fork = 1,
  connect = function(event)
    io.stderr:write(string.format("interval %q fired in PID %d at %.1f\n",
      event.interval, moonbridge_io.getpid(), moonbridge_io.timeref()))
    return true
  end,
}
