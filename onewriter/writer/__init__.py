"""The writer side: the service, its intake, its engine, its endpoints. It never
imports the client side."""
