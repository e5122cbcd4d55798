"""Drop-in compatibility profiles: each seed API's paths, fields, envelopes and errors, translated to the
native core. A profile reads and writes nothing itself; its creates and changes are the ingress's jobs,
its reads the query service's repository calls."""
