//! The etcd store over TLS with authentication, against a real etcd: the CA is verified and
//! passwords are checked.

use std::sync::Arc;
use std::time::Duration;

use shoal_store::{Credentials, EtcdOptions, EtcdStore, EtcdTls, Store, StoreError, StoreOptions};
use shoal_tests::etcd::{EtcdFixture, EtcdSecurity};
use shoal_tests::pki::Pki;

async fn secured(jwt_ttl: Option<Duration>) -> EtcdFixture {
    let mut etcd = EtcdFixture::start_with(EtcdSecurity {
        tls: Some(Arc::new(Pki::new("etcd test CA"))),
        client_cert_auth: false,
        jwt_ttl,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    etcd.enable_auth().await.expect("auth enabled");
    etcd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_against_the_ca_and_passwords_are_checked() {
    let etcd = secured(None).await;
    let root = etcd.store().await.unwrap();
    root.put("/t/a", b"1".to_vec(), None).await.unwrap();

    // The same, the way the command line opens it: files for the CA and the password.
    let url = etcd.url();
    let options = StoreOptions {
        ca: etcd.pki().map(|p| p.ca_file()),
        user: Some("root".into()),
        password_file: etcd.root_password_file(),
        ..Default::default()
    };
    let store = shoal_store::open_store_with(&url, &options).await.unwrap();
    assert_eq!(store.get("/t/a").await.unwrap().unwrap().value, b"1");

    // Another CA's certificate is refused: the server is not who it claims to be.
    let stranger = Pki::new("some other CA");
    let wrong_ca = EtcdOptions {
        tls: Some(EtcdTls::new(stranger.ca_pem().into_bytes()).unwrap()),
        credentials: etcd.root(),
        ..EtcdOptions::default()
    };
    let e = EtcdStore::connect_with(&[etcd.endpoint()], wrong_ca)
        .await
        .unwrap()
        .get("/t/a")
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
    println!("with another CA: {e}");

    // Cleartext to the TLS port gets nowhere.
    let cleartext = EtcdStore::connect(&[etcd.endpoint()]).await.unwrap();
    assert!(cleartext.get("/t/a").await.is_err());

    // A wrong password is an authentication failure, and no credentials at all get nothing.
    let wrong = etcd
        .store_as(Some(Credentials::new("root", "not-the-password")))
        .await
        .unwrap();
    let e = wrong.get("/t/a").await.unwrap_err();
    assert!(matches!(e, StoreError::AuthFailed(_)), "{e}");
    assert!(!e.to_string().contains("not-the-password"), "{e}");
    let anonymous = etcd.store_as(None).await.unwrap();
    assert!(anonymous.get("/t/a").await.is_err());
}
