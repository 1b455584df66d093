"""What the server and the workers share: the Redis data model, its scripts and the settings base.

Neither grpc nor the server nor user task code is imported from here.
"""
