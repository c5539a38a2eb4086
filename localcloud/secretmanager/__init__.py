"""A local Secret Manager (REST v1) for the real ``google-cloud-secret-manager`` client.

Google ships no Secret Manager emulator, yet the secret *is* this system's database
(docs/external-apis.md §4.1, §4.2): labels find managed integrations, annotations hold their state and the
rotation lease, version aliases mark ``current``/``previous``/``pending`` keys, and the
secret's etag guards every write. So the stand-in reproduces the service's documented
contract rather than a convenient approximation of it, because the project's adapter is
tested through the generated client against exactly this wire format:

- paths, verbs, query parameters and bodies as the generated REST transport sends them
  (``projects/{project}/secrets`` only; location-scoped paths answer UNIMPLEMENTED);
- Google's JSON error body ``{"error": {"code", "message", "status"}}``. The REST client
  picks the exception class from the HTTP status alone, so 409 ALREADY_EXISTS surfaces as
  ``google.api_core.exceptions.Conflict`` and 400 FAILED_PRECONDITION as ``BadRequest``;
  the gRPC-only subclasses (``AlreadyExists``, ``FailedPrecondition``) never appear;
- etags: opaque quoted strings, renewed by every modification of the resource they belong
  to (even a no-op), never by a change to another resource (adding a version leaves the
  secret's etag alone); a stale etag fails with 400 FAILED_PRECONDITION, as the etags page
  of the Secret Manager documentation states;
- ``latest`` is the most recently *created* version whatever its state, so accessing it when
  it is disabled or destroyed fails with FAILED_PRECONDITION, as the real service does;
- event notifications to a secret's topics (``TOPIC_CONFIGURED``, ``SECRET_*``) with the
  documented attributes, handed to a hook rather than to Pub/Sub so that the local cloud
  decides where they go; ``fire_due_rotations`` plays Secret Manager's rotation scheduler;
- access as conditional role bindings shape it (:class:`CallerAccess`), for callers known by
  their bearer token: outside its reach a call answers 403 PERMISSION_DENIED "Permission
  'PERMISSION' denied for resource 'NAME' (or it may not exist)." (the wording of real
  responses quoted in public issue threads, the name as the request gave it), decided before
  the resource is looked up, so that the answer is the same whether it exists or not. Which
  permission each method needs, and that listing and creating are checked on the project,
  is each method's "Authorization requires" line in the REST reference.

Where the documentation is silent the stand-in chooses the stricter behaviour, so code
that passes here also passes against the real service: destroying a version that an alias
still names is refused, mutating calls accept only version numbers (not aliases), and
filters outside the documented fields are rejected as INVALID_ARGUMENT.
"""
