/* The contract between one app's main.c and the shared server code: what makes an app itself. */
#ifndef APP_H
#define APP_H

/* One app's identity and look. Every string is static and borrowed for the life of the process. */
struct app_def {
    const char *name;       /* "app2": shown on the page, in JSON and in the Server header */
    const char *title;      /* the page's headline */
    const char *tagline;    /* one line under the headline */
    const char *accent;     /* CSS colour of the headline and the card's edge */
    const char *background; /* CSS background of the page */
};

/*
 * Runs the app: reads $LISTEN (default 0.0.0.0:8080), $POD_NAME and $POD_IP, serves until SIGTERM
 * or SIGINT, then lets requests in flight finish and returns the process exit status (0 after a
 * clean drain, 1 when the listener cannot be set up; the reason is printed to stderr).
 */
int app_main(const struct app_def *def);

#endif
