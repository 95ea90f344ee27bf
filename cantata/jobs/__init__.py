"""Jobs: durable task store, scheduler and worker between the API and the pipeline."""
