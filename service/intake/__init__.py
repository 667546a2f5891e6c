"""Work arriving from outside: upload webhooks and the Label Studio sweep, turned into jobs."""
